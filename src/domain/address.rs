//! Which network addresses paycore may call on a merchant's behalf. A notify URL is chosen by
//! the merchant (or whoever holds its key), so without a rule it could point paycore's
//! notifier at the host itself or at the internal network behind it (server-side request
//! forgery). The rule is applied twice: to an IP literal when an order is created, and to every
//! address a host name resolves to when a notification is delivered (a name that resolves only
//! to refused addresses fails the attempt). Pure: no resolution happens here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of destination an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable on the internet.
    Public,
    /// This host: 127.0.0.0/8, ::1 (and the name `localhost`).
    Loopback,
    /// An internal network: 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT),
    /// fc00::/7 (unique local), and link-local 169.254/16 and fe80::/10 (cloud metadata
    /// services live there).
    Private,
    /// 0.0.0.0/8 and `::`: on Linux a connection to them reaches this host.
    Unspecified,
    /// Multicast, broadcast and reserved ranges: never a merchant's endpoint.
    NotUnicast,
}

/// The addresses notifications may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Loopback destinations are allowed (a demo or a test on one machine).
    pub allow_loopback: bool,
    /// Private, link-local and unique-local destinations are allowed.
    pub allow_private: bool,
}

/// Classifies an IPv4 address.
fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    match (a, b) {
        (127, _) => AddressClass::Loopback,
        (0, _) => AddressClass::Unspecified,
        (10, _) | (192, 168) | (169, 254) => AddressClass::Private,
        (172, 16..=31) | (100, 64..=127) => AddressClass::Private,
        (224..=255, _) => AddressClass::NotUnicast,
        _ => AddressClass::Public,
    }
}

/// Classifies an IPv6 address; one that carries an IPv4 address (mapped `::ffff:a.b.c.d`, or
/// the NAT64 prefix `64:ff9b::/96`) is classified as that IPv4 address.
fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip == Ipv6Addr::LOCALHOST {
        AddressClass::Loopback
    } else if ip == Ipv6Addr::UNSPECIFIED {
        AddressClass::Unspecified
    } else if s[..6] == [0; 6] {
        // The deprecated IPv4-compatible form ::a.b.c.d.
        AddressClass::NotUnicast
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        AddressClass::Private
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::NotUnicast
    } else {
        AddressClass::Public
    }
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether a host name stands for this host whatever DNS says (RFC 6761: `localhost` and
/// every name under it).
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

impl AddressPolicy {
    /// Why an address of this class is refused (\"points at ...\"), or `None` when it is allowed.
    pub fn refusal(&self, class: AddressClass) -> Option<&'static str> {
        match class {
            AddressClass::Public => None,
            AddressClass::Loopback if self.allow_loopback => None,
            AddressClass::Loopback => Some("points at this host (loopback)"),
            AddressClass::Private if self.allow_private => None,
            AddressClass::Private => Some("points at a private or link-local address"),
            // Reaches this host on Linux, so it needs both.
            AddressClass::Unspecified if self.allow_private && self.allow_loopback => None,
            AddressClass::Unspecified => Some("points at an unspecified address"),
            AddressClass::NotUnicast => {
                Some("points at a multicast, broadcast or reserved address")
            }
        }
    }

    /// Whether notifications may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.refusal(classify(ip)).is_none()
    }

    /// Checks what can be checked of a URL's host before resolution: an IP literal, or a name
    /// that always means this host. Other names are checked address by address after DNS.
    pub fn check_host(&self, host: &url::Host<&str>) -> Result<(), &'static str> {
        let class = match host {
            url::Host::Ipv4(v4) => classify_v4(*v4),
            url::Host::Ipv6(v6) => classify_v6(*v6),
            url::Host::Domain(name) if is_localhost_name(name) => AddressClass::Loopback,
            url::Host::Domain(_) => return Ok(()),
        };
        self.refusal(class).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ranges_are_classified() {
        use AddressClass::*;
        for (ip, want) in [
            ("93.184.216.34", Public),
            ("8.8.8.8", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("::1", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("100.127.255.255", Private),
            ("100.128.0.1", Public),
            ("169.254.169.254", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fe80::1", Private),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("224.0.0.1", NotUnicast),
            ("255.255.255.255", NotUnicast),
            ("ff02::1", NotUnicast),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::a00:1", Private),
            ("64:ff9b::808:808", Public),
            ("::127.0.0.1", NotUnicast),
            ("2001:4860:4860::8888", Public),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn the_policy_refuses_unless_allowed() {
        let strict = AddressPolicy::default();
        let loopback = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        let open = AddressPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(strict.permits(ip("93.184.216.34")));
        assert!(!strict.permits(ip("127.0.0.1")));
        assert!(loopback.permits(ip("127.0.0.1")) && loopback.permits(ip("::1")));
        assert!(!loopback.permits(ip("10.0.0.1")));
        assert!(!loopback.permits(ip("0.0.0.0")));
        assert!(open.permits(ip("10.0.0.1")) && open.permits(ip("0.0.0.0")));
        assert!(!open.permits(ip("224.0.0.1")));
    }

    #[test]
    fn hosts_are_checked_before_resolution() {
        let strict = AddressPolicy::default();
        let host = |u: &str| url::Url::parse(u).unwrap();
        for refused in [
            "http://10.0.0.1/x",
            "http://[::1]/x",
            "http://localhost:8080/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
            // WHATWG URL parsing reads these as 127.0.0.1: the check sees what is connected to.
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://127.1/x",
        ] {
            let u = host(refused);
            assert!(strict.check_host(&u.host().unwrap()).is_err(), "{refused}");
        }
        for fine in ["https://merchant.example/n", "http://93.184.216.34/n"] {
            let u = host(fine);
            assert!(strict.check_host(&u.host().unwrap()).is_ok(), "{fine}");
        }
    }
}
