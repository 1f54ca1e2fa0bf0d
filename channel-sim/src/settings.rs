//! Settings of the simulator: how fast and how badly the simulated channel behaves
//! (pay delay, API latency, failure/duplicate/loss rates, QPS cap) and every bound it keeps
//! (records, in-flight callbacks, retries, timeouts). Deserializable from a config file section.

use serde::{Deserialize, Serialize};

/// Behaviour and bounds of one simulator instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Shared HMAC secret for requests and callbacks.
    pub secret: String,
    /// Lower bound of the delay between create and the payment result, in ms.
    pub pay_delay_ms_min: u64,
    /// Upper bound of the delay between create and the payment result, in ms.
    pub pay_delay_ms_max: u64,
    /// Lower bound of the simulated latency of each signed endpoint, in ms.
    pub latency_ms_min: u64,
    /// Upper bound of the simulated latency of each signed endpoint, in ms.
    pub latency_ms_max: u64,
    /// Probability that a payment ends PAYERROR instead of SUCCESS.
    pub fail_rate: f64,
    /// Probability that a callback is delivered twice.
    pub duplicate_callback_rate: f64,
    /// Probability that a callback is never sent.
    pub lost_callback_rate: f64,
    /// Probability that a paid payment is charged a second time, under a new trade_no (with
    /// its own callback), one pay delay after the first charge.
    pub double_charge_rate: f64,
    /// Probability that a paid payment is charged the asked amount + 1 (the callback and the
    /// charge say so; the payment view keeps the asked amount).
    pub wrong_amount_rate: f64,
    /// The first this many attempts of each refund (by out_refund_no) answer 503 SYSTEMERROR.
    pub refund_errors_per_refund: u32,
    /// Those failing attempts record the refund first: the money goes back, the answer is lost.
    pub refund_error_after_recording: bool,
    /// Sustained requests per second accepted before answering FREQUENCY_LIMITED.
    pub qps: u32,
    /// Requests accepted at once above the sustained rate.
    pub burst: u32,
    /// Most payments kept in memory; create answers CAPACITY beyond it.
    pub max_payments: usize,
    /// Most callback deliveries in flight; further ones are dropped with a warning.
    pub max_pending_callbacks: usize,
    /// Retries of a callback after its first attempt.
    pub callback_max_retries: u32,
    /// First back-off between callback attempts, in ms; doubles after each retry.
    pub callback_retry_base_ms: u64,
    /// Timeout of one callback attempt, in ms.
    pub callback_timeout_ms: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            secret: "sim-secret-change-me".to_owned(),
            pay_delay_ms_min: 200,
            pay_delay_ms_max: 800,
            latency_ms_min: 0,
            latency_ms_max: 0,
            fail_rate: 0.0,
            duplicate_callback_rate: 0.0,
            lost_callback_rate: 0.0,
            double_charge_rate: 0.0,
            wrong_amount_rate: 0.0,
            refund_errors_per_refund: 0,
            refund_error_after_recording: false,
            qps: 5000,
            burst: 1000,
            max_payments: 1_000_000,
            max_pending_callbacks: 10_000,
            callback_max_retries: 8,
            callback_retry_base_ms: 500,
            callback_timeout_ms: 5000,
        }
    }
}

impl SimSettings {
    /// Checks ranges (rates in [0,1], min <= max, qps/burst > 0); the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.secret.is_empty() {
            return Err("secret: must not be empty".to_owned());
        }
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("duplicate_callback_rate", self.duplicate_callback_rate),
            ("lost_callback_rate", self.lost_callback_rate),
            ("double_charge_rate", self.double_charge_rate),
            ("wrong_amount_rate", self.wrong_amount_rate),
        ] {
            // `contains` is false for NaN too, which rand would panic on later.
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: must be within [0, 1], got {rate}"));
            }
        }
        if self.pay_delay_ms_min > self.pay_delay_ms_max {
            return Err("pay_delay_ms_min: must not exceed pay_delay_ms_max".to_owned());
        }
        if self.latency_ms_min > self.latency_ms_max {
            return Err("latency_ms_min: must not exceed latency_ms_max".to_owned());
        }
        for (name, value) in [
            ("qps", u64::from(self.qps)),
            ("burst", u64::from(self.burst)),
            ("max_payments", self.max_payments as u64),
            ("max_pending_callbacks", self.max_pending_callbacks as u64),
            ("callback_timeout_ms", self.callback_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{name}: must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SimSettings::default().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let bad_rate = SimSettings {
            lost_callback_rate: 1.5,
            ..SimSettings::default()
        };
        assert!(
            bad_rate
                .validate()
                .unwrap_err()
                .starts_with("lost_callback_rate")
        );
        let nan = SimSettings {
            fail_rate: f64::NAN,
            ..SimSettings::default()
        };
        assert!(nan.validate().unwrap_err().starts_with("fail_rate"));
        let delays = SimSettings {
            pay_delay_ms_min: 9,
            pay_delay_ms_max: 1,
            ..SimSettings::default()
        };
        assert!(
            delays
                .validate()
                .unwrap_err()
                .starts_with("pay_delay_ms_min")
        );
        let qps = SimSettings {
            qps: 0,
            ..SimSettings::default()
        };
        assert!(qps.validate().unwrap_err().starts_with("qps"));
    }

    #[test]
    fn partial_config_uses_defaults_and_rejects_unknown_fields() {
        let parsed: SimSettings = serde_json::from_str(r#"{"qps": 7}"#).unwrap();
        assert_eq!(
            parsed,
            SimSettings {
                qps: 7,
                ..SimSettings::default()
            }
        );
        assert!(serde_json::from_str::<SimSettings>(r#"{"qpz": 7}"#).is_err());
    }
}
