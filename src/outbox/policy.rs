//! Where webhooks may go. A webhook URL is chosen by whoever holds an admin key, and the server
//! sits inside a network: without a rule, an endpoint on `169.254.169.254` or `10.0.0.5` would
//! turn dropd into a way in. Loopback, private, link-local and other special ranges are refused
//! unless `--webhook-allow-private`; `--webhook-allow CIDRS` restricts targets to a list (and
//! admits what is on it). Checked when an endpoint is created and on every connection, after
//! name resolution, so a name that later resolves elsewhere is refused too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_private: bool,
    /// When not empty, the only addresses webhooks may reach.
    pub allow: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allow.is_empty() {
            return if self.allow.iter().any(|net| net.contains(&ip)) {
                Ok(())
            } else {
                Err(format!("{ip} is not in --webhook-allow"))
            };
        }
        if !self.allow_private && is_special(ip) {
            return Err(format!(
                "{ip} is a loopback, private or otherwise special address \
                 (allow it with --webhook-allow-private or --webhook-allow)"
            ));
        }
        Ok(())
    }

    /// An endpoint URL as given: `http` or `https`, a host, no credentials; a literal address
    /// checked now.
    pub fn check_url(&self, text: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(text).map_err(|e| format!("url {text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url must be http or https, not {}", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials".into());
        }
        match url.host() {
            None => return Err("url has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// The addresses of `host` this policy lets webhooks reach.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.check_ip(addr.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refused = Some(why);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(refused.unwrap_or_else(|| format!("{host} has no address")));
        }
        Ok(allowed)
    }
}

fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// reqwest's resolver, held to the policy: every connection's addresses are checked.
pub struct Resolver(pub Arc<TargetPolicy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let strict = TargetPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(strict.check_ip(ip).is_err(), "{ip}");
            let open = TargetPolicy {
                allow_private: true,
                ..TargetPolicy::default()
            };
            assert!(open.check_ip(ip).is_ok(), "{ip}");
        }
        assert!(strict
            .check_ip("93.184.216.34".parse().expect("ip"))
            .is_ok());
        let listed = TargetPolicy {
            allow_private: false,
            allow: vec!["127.0.0.1/32".parse().expect("net")],
        };
        assert!(listed.check_ip("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(listed.check_ip("127.0.0.2".parse().expect("ip")).is_err());
        assert!(listed
            .check_ip("93.184.216.34".parse().expect("ip"))
            .is_err());
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        let policy = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        assert!(policy.check_url("https://hooks.example.com/x").is_ok());
        assert!(policy.check_url("ftp://example.com/").is_err());
        assert!(policy.check_url("https://u:p@example.com/").is_err());
        assert!(policy.check_url("not a url").is_err());
        assert!(TargetPolicy::default()
            .check_url("http://127.0.0.1:9/")
            .is_err());
    }
}
