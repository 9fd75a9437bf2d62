//! Live rules and SIGHUP reload.
//!
//! [`Rules`] is what a connection needs to turn frames into records and route them: the
//! classifier and the output filters (compiled against that classifier's category indices, so
//! they change together), plus how its categories map to the process's counters. It sits behind
//! an [`ArcSwap`] ([`SharedRules`]) that every connection's processor loads once per batch.
//!
//! [`Reloader::reload`] (SIGHUP) re-reads and validates the whole config file. A config that
//! does not validate is refused with the reason and the rules in use stay. Otherwise the new
//! classification rules and output filters are swapped in (connections stay open; their next
//! batch uses them). The TLS listeners re-read their certificate files in both cases (as
//! before reload existed: new connections get the new certificate). Every other change
//! (listeners, outputs other than their `filter`, `[server]`, `[admin]`) is logged as needing a
//! restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::classify::Classifier;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::route::Filter;
use crate::tls::TlsReload;

/// The classifier and output filters in use (one generation).
#[derive(Debug)]
pub struct Rules {
    /// Classification rules.
    pub classifier: Classifier,
    /// Per output (config order), its filter; `None` = every record.
    pub filters: Vec<Option<Filter>>,
    /// Category index → metrics category slot; `None` when they are the same (the classifier
    /// the process started with).
    pub slots: Option<Vec<u16>>,
    /// Per category index: counted as a failure (`[admin] failure_categories`).
    pub failure: Vec<bool>,
    /// 0 at start, +1 per successful reload.
    pub generation: u64,
}

/// The rules every connection reads, once per batch.
pub type SharedRules = Arc<ArcSwap<Rules>>;

impl Rules {
    /// The rules of `config`. With `metrics` (a reload), the classifier's categories are mapped
    /// to the process's counters, adding new category names; `None` at start (identity).
    pub fn build(
        config: &Config,
        filter_source: &[Option<crate::config::FilterConfig>],
        metrics: Option<&Metrics>,
        generation: u64,
    ) -> Result<Rules, ConfigError> {
        let classifier = config.classifier()?;
        let mut filters = Vec::with_capacity(filter_source.len());
        for (i, f) in filter_source.iter().enumerate() {
            filters.push(match f {
                Some(f) => Some(Filter::new(f, &classifier).map_err(|e| {
                    let name = config.output.get(i).map_or("", |o| o.name.as_str());
                    ConfigError(format!("output[{i}] {name:?}.filter: {e}"))
                })?),
                None => None,
            });
        }
        let slots = match metrics {
            None => None,
            Some(m) => Some(m.category_slots(classifier.categories()).ok_or_else(|| {
                ConfigError(format!(
                    "classify.rule: more categories than the {} counters this process has \
                     room for since it started; restart to use them",
                    m.categories.len()
                ))
            })?),
        };
        let failure = classifier
            .categories()
            .iter()
            .map(|c| config.admin.failure_categories.contains(c))
            .collect();
        Ok(Rules {
            classifier,
            filters,
            slots,
            failure,
            generation,
        })
    }
}

/// What the last reload did, for the status page.
#[derive(Debug, Clone)]
pub struct ReloadResult {
    /// When.
    pub at: SystemTime,
    /// `Ok(notes)` (changes that need a restart, if any) or the reason it was refused.
    pub result: Result<Vec<String>, String>,
}

/// Re-reads the config file on SIGHUP (see the module doc).
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// The config the process runs with (listeners and outputs as started).
    running: Config,
    rules: SharedRules,
    metrics: Arc<Metrics>,
    tls: TlsReload,
    generation: AtomicU64,
    last: Mutex<Option<ReloadResult>>,
}

impl Reloader {
    /// A reloader of the file `path`, which `running` was read from.
    pub fn new(
        path: PathBuf,
        running: Config,
        rules: SharedRules,
        metrics: Arc<Metrics>,
        tls: TlsReload,
    ) -> Reloader {
        Reloader {
            path,
            running,
            rules,
            metrics,
            tls,
            generation: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Reloads; logs and returns the outcome: the notes about changes that need a restart, or
    /// why the new config was refused (the rules in use then stay).
    pub fn reload(&self) -> Result<Vec<String>, ConfigError> {
        // The TLS listeners re-read their files whatever the config text says (a certificate
        // rotation does not wait for a config fix); errors are logged and the old ones stay.
        let _ = self.tls.reload();
        let r = self.try_reload();
        match &r {
            Ok(notes) => {
                tracing::info!(config = %self.path.display(),
                    generation = self.generation.load(Relaxed),
                    "config reloaded: classification rules, output filters and TLS certificates");
                for n in notes {
                    tracing::warn!(config = %self.path.display(), "{n}");
                }
            }
            Err(e) => tracing::error!(config = %self.path.display(),
                "config reload refused, the rules in use stay: {e}"),
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(ReloadResult {
                at: SystemTime::now(),
                result: r.clone().map_err(|e| e.0),
            });
        }
        r
    }

    fn try_reload(&self) -> Result<Vec<String>, ConfigError> {
        let new = Config::load(&self.path)?;
        let mut notes = Vec::new();
        let restart = |what: &str| {
            format!("{what} changed: restart to apply it (reload keeps the running one)")
        };
        if format!("{:?}", new.listen) != format!("{:?}", self.running.listen) {
            notes.push(restart("[[listen]]"));
        }
        if format!("{:?}", new.server) != format!("{:?}", self.running.server) {
            notes.push(restart("[server]"));
        }
        let admin_cmp = |a: &crate::config::AdminConfig| {
            (a.address.clone(), a.top_namespaces, a.sample_interval_secs)
        };
        if admin_cmp(&new.admin) != admin_cmp(&self.running.admin) {
            notes.push(restart(
                "[admin] address, top_namespaces or sample_interval_secs",
            ));
        }
        // Filters by output name; the outputs themselves stay as started.
        let mut filters = Vec::with_capacity(self.running.output.len());
        for (i, o) in self.running.output.iter().enumerate() {
            match new.output.iter().find(|n| n.name == o.name) {
                Some(n) => {
                    let strip = |c: &crate::config::OutputConfig| {
                        let mut c = c.clone();
                        c.filter = None;
                        format!("{c:?}")
                    };
                    if strip(n) != strip(o) {
                        notes.push(restart(&format!(
                            "output[{i}] {:?} (other than filter)",
                            o.name
                        )));
                    }
                    filters.push(n.filter.clone());
                }
                None => {
                    notes.push(format!(
                        "output {:?} is no longer in the config: it keeps running with its \
                         filter until a restart",
                        o.name
                    ));
                    filters.push(o.filter.clone());
                }
            }
        }
        for n in &new.output {
            if !self.running.output.iter().any(|o| o.name == n.name) {
                notes.push(format!("output {:?} is new: restart to start it", n.name));
            }
        }
        let generation = self.generation.load(Relaxed) + 1;
        let rules = Rules::build(&new, &filters, Some(&self.metrics), generation)?;
        self.rules.store(Arc::new(rules));
        self.generation.store(generation, Relaxed);
        Ok(notes)
    }

    /// The rules in use.
    pub fn rules(&self) -> SharedRules {
        self.rules.clone()
    }

    /// What the last reload did.
    pub fn last(&self) -> Option<ReloadResult> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}
