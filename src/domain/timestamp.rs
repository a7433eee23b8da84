//! Timestamps as the API writes them: RFC 3339 in UTC with exactly three decimals
//! (`2026-12-01T01:32:52.000Z`). chrono's own form drops a fraction of zero, so one value in
//! a thousand came out shorter than the rest and sorted out of place as text. Every time is
//! kept to the millisecond, so three decimals lose nothing.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// `#[serde(serialize_with = "rfc3339_millis")]`
pub fn rfc3339_millis<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// `#[serde(serialize_with = "optional_rfc3339_millis")]`, for an optional time.
pub fn optional_rfc3339_millis<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339_millis(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Times {
        #[serde(serialize_with = "rfc3339_millis")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "optional_rfc3339_millis")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn every_time_has_three_decimals() {
        let whole_second = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let with_millis = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        let json = serde_json::to_value(Times {
            at: whole_second,
            maybe: Some(with_millis),
        })
        .unwrap();
        assert_eq!(json["at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(json["maybe"], "2027-01-15T08:00:00.123Z");
        let json = serde_json::to_value(Times {
            at: with_millis,
            maybe: None,
        })
        .unwrap();
        assert!(json["maybe"].is_null());
    }
}
