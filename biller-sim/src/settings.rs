//! Settings of the biller simulator: its secret, how badly it behaves (transient and
//! permanent write-off failures, lost answers, refused reversals, latency) and the bound on
//! the records it keeps. Deserializable from a config file section; the secret never prints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest accepted `latency_ms_max`: a slower biller is a hung test, not a simulation.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Behaviour and bounds of one biller simulator.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BillerSettings {
    /// Shared HMAC secret of signed requests. Default "biller-secret-change-me".
    pub secret: String,
    /// Share (0..=1) of write-off calls answered 503 SYSTEM_ERROR with nothing recorded.
    /// Default 0.
    pub failure_rate: f64,
    /// The first this many write-off attempts of each order answer 503 SYSTEM_ERROR with
    /// nothing recorded ("fails twice, then succeeds" is 2). Default 0.
    pub fail_first: u32,
    /// Every write-off answers 422 ACCOUNT_INVALID, nothing recorded. Default false.
    pub permanent_failure: bool,
    /// Every reversal of a known write-off answers 409 REVERSAL_REFUSED, nothing reversed.
    /// Default false.
    pub refuse_reversals: bool,
    /// Lower bound of the delay before answering a correctly signed call, in ms. Default 0.
    pub latency_ms_min: u64,
    /// Upper bound of that delay, in ms (at most [`MAX_LATENCY_MS`]). Default 0.
    pub latency_ms_max: u64,
    /// Share (0..=1) of new write-offs that are recorded but answered 503 SYSTEM_ERROR, as
    /// when the answer is lost on the way back. Default 0.
    pub answer_lost_rate: f64,
    /// Most orders (write-offs and per-order attempt counters) and most reversals kept;
    /// beyond it a new order or reversal answers 503 CAPACITY. Default 1 000 000.
    pub max_records: usize,
}

impl Default for BillerSettings {
    fn default() -> Self {
        Self {
            secret: "biller-secret-change-me".to_owned(),
            failure_rate: 0.0,
            fail_first: 0,
            permanent_failure: false,
            refuse_reversals: false,
            latency_ms_min: 0,
            latency_ms_max: 0,
            answer_lost_rate: 0.0,
            max_records: 1_000_000,
        }
    }
}

impl fmt::Debug for BillerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BillerSettings")
            .field("secret", &"***")
            .field("failure_rate", &self.failure_rate)
            .field("fail_first", &self.fail_first)
            .field("permanent_failure", &self.permanent_failure)
            .field("refuse_reversals", &self.refuse_reversals)
            .field("latency_ms_min", &self.latency_ms_min)
            .field("latency_ms_max", &self.latency_ms_max)
            .field("answer_lost_rate", &self.answer_lost_rate)
            .field("max_records", &self.max_records)
            .finish()
    }
}

impl BillerSettings {
    /// Checks ranges (rates in [0, 1] and not NaN, latency min <= max <= [`MAX_LATENCY_MS`],
    /// a secret, room for a record); the error starts with the field's name.
    pub fn validate(&self) -> Result<(), String> {
        if self.secret.is_empty() {
            return Err("secret: must not be empty".to_owned());
        }
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("answer_lost_rate", self.answer_lost_rate),
        ] {
            // `contains` is false for NaN too, which rand would panic on later.
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: must be within [0, 1], got {rate}"));
            }
        }
        if self.latency_ms_min > self.latency_ms_max {
            return Err("latency_ms_min: must not exceed latency_ms_max".to_owned());
        }
        if self.latency_ms_max > MAX_LATENCY_MS {
            return Err(format!("latency_ms_max: must not exceed {MAX_LATENCY_MS}"));
        }
        if self.max_records == 0 {
            return Err("max_records: must be greater than 0".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(settings: BillerSettings) -> String {
        settings.validate().unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(BillerSettings::default().validate(), Ok(()));
        let edges = BillerSettings {
            failure_rate: 1.0,
            answer_lost_rate: 0.0,
            latency_ms_min: MAX_LATENCY_MS,
            latency_ms_max: MAX_LATENCY_MS,
            max_records: 1,
            ..BillerSettings::default()
        };
        assert_eq!(edges.validate(), Ok(()));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                BillerSettings {
                    failure_rate: f64::NAN,
                    ..BillerSettings::default()
                },
                "failure_rate",
            ),
            (
                BillerSettings {
                    failure_rate: -0.1,
                    ..BillerSettings::default()
                },
                "failure_rate",
            ),
            (
                BillerSettings {
                    answer_lost_rate: 1.01,
                    ..BillerSettings::default()
                },
                "answer_lost_rate",
            ),
            (
                BillerSettings {
                    answer_lost_rate: f64::INFINITY,
                    ..BillerSettings::default()
                },
                "answer_lost_rate",
            ),
            (
                BillerSettings {
                    latency_ms_min: 9,
                    latency_ms_max: 1,
                    ..BillerSettings::default()
                },
                "latency_ms_min",
            ),
            (
                BillerSettings {
                    latency_ms_max: MAX_LATENCY_MS + 1,
                    ..BillerSettings::default()
                },
                "latency_ms_max",
            ),
            (
                BillerSettings {
                    max_records: 0,
                    ..BillerSettings::default()
                },
                "max_records",
            ),
            (
                BillerSettings {
                    secret: String::new(),
                    ..BillerSettings::default()
                },
                "secret",
            ),
        ];
        for (settings, field) in cases {
            let err = error_of(settings);
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn partial_config_uses_defaults_and_rejects_unknown_fields() {
        let parsed: BillerSettings = serde_json::from_str(r#"{"fail_first": 2}"#).unwrap();
        assert_eq!(
            parsed,
            BillerSettings {
                fail_first: 2,
                ..BillerSettings::default()
            }
        );
        assert!(serde_json::from_str::<BillerSettings>(r#"{"fail_frist": 2}"#).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let printed = format!(
            "{:?}",
            BillerSettings {
                secret: "hunter2".to_owned(),
                ..BillerSettings::default()
            }
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains(r#"secret: "***""#), "{printed}");
    }
}
