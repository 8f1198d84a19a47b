//! Reports the host's uptime from /proc/uptime.

use pganalytics_guest::{Collector, Error, Value, json, procfs};

struct Uptime;

impl Collector for Uptime {
    fn collect() -> Result<Vec<Value>, Error> {
        let text = procfs::read("uptime")?;
        let seconds: f64 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Invalid(format!("procfs `uptime`: no seconds in `{text}`")))?;
        // `item` adds `type` and an RFC 3339 `timestamp`.
        Ok(vec![pganalytics_guest::item(
            "uptime",
            json!({ "seconds": seconds }),
        )?])
    }
}

pganalytics_guest::export_collector!(Uptime);
