//! The secrets paycore ships in `config.toml` and its built-in defaults are published: anyone
//! can sign a request with them. They are for a loopback demo only; a process that listens on
//! anything else must have its own.

use super::Settings;

/// Every secret this repository publishes (config.toml, the built-in defaults, the simulators').
pub const DEMO_SECRETS: &[&str] = &[
    "demo-secret-change-me",
    "sim-secret-change-me",
    "biller-secret-change-me",
];

/// True when `bind` only reaches this machine: a loopback address or `localhost`.
pub fn is_loopback(bind: &str) -> bool {
    bind.eq_ignore_ascii_case("localhost")
        || bind
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The dotted key of the first published secret in use, if `server.bind` is not loopback.
pub fn demo_secret_exposed(s: &Settings) -> Option<String> {
    if is_loopback(&s.server.bind) {
        return None;
    }
    let demo = |v: &str| DEMO_SECRETS.contains(&v);
    if demo(s.admin.token.expose()) {
        return Some("admin.token".into());
    }
    for (name, c) in &s.channels {
        if demo(c.secret.expose()) {
            return Some(format!("channels.{name}.secret"));
        }
    }
    for (i, m) in s.merchants.iter().enumerate() {
        if demo(m.secret.expose()) {
            return Some(format!("merchants.{i}.secret"));
        }
        if m.biller.as_ref().is_some_and(|b| demo(b.secret.expose())) {
            return Some(format!("merchants.{i}.biller.secret"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_told_from_the_rest() {
        for b in [
            "127.0.0.1",
            "127.3.2.1",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(b), "{b}");
        }
        for b in ["0.0.0.0", "::", "10.0.0.5", "paycore.internal", ""] {
            assert!(!is_loopback(b), "{b}");
        }
    }

    #[test]
    fn published_secrets_are_named_only_off_loopback() {
        let mut s = Settings::default();
        assert_eq!(demo_secret_exposed(&s), None);
        s.server.bind = "0.0.0.0".into();
        assert_eq!(
            demo_secret_exposed(&s).as_deref(),
            Some("channels.sim.secret")
        );
        s.channels.get_mut("sim").unwrap().secret = super::super::Secret::new("x".repeat(32));
        assert_eq!(
            demo_secret_exposed(&s).as_deref(),
            Some("merchants.0.secret")
        );
        s.merchants[0].secret = super::super::Secret::new("m".repeat(32));
        assert_eq!(
            demo_secret_exposed(&s).as_deref(),
            Some("merchants.0.biller.secret")
        );
        s.merchants[0].biller.as_mut().unwrap().secret = super::super::Secret::new("b".repeat(32));
        assert_eq!(demo_secret_exposed(&s), None);
    }

    #[test]
    fn the_shipped_file_off_loopback_needs_its_secrets_set_by_environment() {
        let text = include_str!("../../config.toml");
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let bind = ("PAYCORE_SERVER__BIND", "0.0.0.0");
        let err = Settings::from_toml_and_env(text, env(&[bind])).unwrap_err();
        assert!(err.to_string().contains("channels.sim.secret"), "{err}");
        let own = [
            bind,
            ("PAYCORE_CHANNELS__SIM__SECRET", "own-channel-secret-1"),
            ("PAYCORE_MERCHANTS__0__SECRET", "own-merchant-secret-1"),
            (
                "PAYCORE_MERCHANTS__0__BILLER__SECRET",
                "own-biller-secret-1",
            ),
        ];
        Settings::from_toml_and_env(text, env(&own)).unwrap();
    }
}
