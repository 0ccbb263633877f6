//! The registry zone's name layout (DESIGN §2), parsed from a query name.
//!
//! Relative to the domain (`internal.`), names read right to left: an
//! optional cluster label, then `service` or `instance`, then what they name.
//! A cluster label can never be `service`, `instance` or `ns` (the registry
//! refuses those), so every name has one reading.

use hickory_proto::rr::LowerName;

/// The most labels any registry name has below the domain.
const MAX_DEPTH: usize = 5;

/// What a name under the registry zone refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryName<'a> {
    /// The zone apex: SOA and NS.
    Apex,
    /// `ns.<domain>`: the name server's own address.
    NameServer,
    /// `[<tag>.]<service>.service[.<cluster>]` and the RFC 2782 form
    /// `_<service>._<tcp|udp|tag>.service[.<cluster>]`.
    Service {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
        /// Service name.
        service: &'a str,
        /// Tag filter.
        tag: Option<&'a str>,
        /// The RFC 2782 form, which holds SRV records only.
        srv_only: bool,
    },
    /// `<id>.<service>.instance[.<cluster>]`.
    Instance {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
        /// Service name.
        service: &'a str,
        /// Instance id.
        id: &'a str,
    },
    /// `_services._dns-sd._udp.service[.<cluster>]`: the service types
    /// (RFC 6763 §9).
    ServiceTypes {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
    },
    /// `<id>._<service>._<tcp|udp>.service[.<cluster>]`: a DNS-SD service
    /// instance name (RFC 6763 §4.1), with SRV and TXT.
    DnssdInstance {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
        /// Service name.
        service: &'a str,
        /// Instance id.
        id: &'a str,
    },
    /// `<cluster>`: exists while the cluster is known.
    ClusterNode {
        /// The cluster label.
        cluster: &'a str,
    },
    /// `service[.<cluster>]` or `instance[.<cluster>]`: exist with their cluster.
    Branch {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
    },
    /// `_tcp.service`, `_udp.service` (no tag) and `_<tag>.service`: the
    /// parents of RFC 2782 names, which exist so that resolvers minimising
    /// query names (RFC 9156) reach the names below.
    ProtoNode {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
        /// The tag, unless the label was `_tcp` or `_udp`.
        tag: Option<&'a str>,
    },
    /// `<service>.instance[.<cluster>]`: parent of the instance names.
    InstanceParent {
        /// Explicit cluster label, if any.
        cluster: Option<&'a str>,
        /// Service name.
        service: &'a str,
    },
    /// Anything else: does not exist.
    Unknown,
}

/// Parses `name`, which must be at or below `domain` (given as its number of labels).
pub fn parse(name: &LowerName, domain_labels: usize) -> RegistryName<'_> {
    let total = name.num_labels() as usize;
    debug_assert!(total >= domain_labels);
    let depth = total - domain_labels;
    if depth > MAX_DEPTH {
        return RegistryName::Unknown;
    }
    let mut rel = [""; MAX_DEPTH];
    for (slot, label) in rel.iter_mut().zip(name.iter().take(depth)) {
        match std::str::from_utf8(label) {
            Ok(label) => *slot = label,
            Err(_) => return RegistryName::Unknown,
        }
    }
    parse_relative(&rel[..depth])
}

fn parse_relative<'a>(rel: &[&'a str]) -> RegistryName<'a> {
    let n = rel.len();
    let is_branch = |l: &str| l == "service" || l == "instance";
    let (cluster, kind, body) = match rel {
        [] => return RegistryName::Apex,
        ["ns"] => return RegistryName::NameServer,
        [.., last] if is_branch(last) => (None, *last, &rel[..n - 1]),
        [.., kind, cluster] if is_branch(kind) => (Some(*cluster), *kind, &rel[..n - 2]),
        [cluster] => return RegistryName::ClusterNode { cluster },
        _ => return RegistryName::Unknown,
    };
    if kind == "service" {
        match body {
            [] => RegistryName::Branch { cluster },
            [label] => match label.strip_prefix('_') {
                Some("tcp" | "udp") => RegistryName::ProtoNode { cluster, tag: None },
                Some(tag) => RegistryName::ProtoNode {
                    cluster,
                    tag: Some(tag),
                },
                None => RegistryName::Service {
                    cluster,
                    service: label,
                    tag: None,
                    srv_only: false,
                },
            },
            // The parent of the service type enumeration name.
            ["_dns-sd", "_udp"] => RegistryName::Branch { cluster },
            ["_services", "_dns-sd", "_udp"] => RegistryName::ServiceTypes { cluster },
            [id, service, proto] if !id.starts_with('_') && matches!(*proto, "_tcp" | "_udp") => {
                match service.strip_prefix('_') {
                    Some(service) => RegistryName::DnssdInstance {
                        cluster,
                        service,
                        id,
                    },
                    None => RegistryName::Unknown,
                }
            }
            [first, second] => match (first.strip_prefix('_'), second.strip_prefix('_')) {
                (Some(service), Some(proto)) => RegistryName::Service {
                    cluster,
                    service,
                    tag: (proto != "tcp" && proto != "udp").then_some(proto),
                    srv_only: true,
                },
                (None, None) => RegistryName::Service {
                    cluster,
                    service: second,
                    tag: Some(first),
                    srv_only: false,
                },
                _ => RegistryName::Unknown,
            },
            _ => RegistryName::Unknown,
        }
    } else {
        match body {
            [] => RegistryName::Branch { cluster },
            [service] => RegistryName::InstanceParent { cluster, service },
            [id, service] => RegistryName::Instance {
                cluster,
                service,
                id,
            },
            _ => RegistryName::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegistryName::*;
    use hickory_proto::rr::Name;

    fn p(name: &str) -> RegistryName<'static> {
        let lower = LowerName::new(&Name::from_ascii(name).unwrap());
        let leaked: &'static LowerName = Box::leak(Box::new(lower));
        parse(leaked, 1)
    }

    #[test]
    fn the_design_table_parses() {
        assert_eq!(p("internal."), Apex);
        assert_eq!(p("ns.internal."), NameServer);
        assert_eq!(
            p("web.service.internal."),
            Service {
                cluster: None,
                service: "web",
                tag: None,
                srv_only: false
            }
        );
        assert_eq!(
            p("V2.Web.Service.Internal."),
            Service {
                cluster: None,
                service: "web",
                tag: Some("v2"),
                srv_only: false
            }
        );
        assert_eq!(
            p("web.service.dc2.internal."),
            Service {
                cluster: Some("dc2"),
                service: "web",
                tag: None,
                srv_only: false
            }
        );
        assert_eq!(
            p("_web._tcp.service.internal."),
            Service {
                cluster: None,
                service: "web",
                tag: None,
                srv_only: true
            }
        );
        assert_eq!(
            p("_web._v2.service.dc2.internal."),
            Service {
                cluster: Some("dc2"),
                service: "web",
                tag: Some("v2"),
                srv_only: true
            }
        );
        assert_eq!(
            p("web-1.web.instance.internal."),
            Instance {
                cluster: None,
                service: "web",
                id: "web-1"
            }
        );
        assert_eq!(
            p("web-1.web.instance.dc2.internal."),
            Instance {
                cluster: Some("dc2"),
                service: "web",
                id: "web-1"
            }
        );
    }

    #[test]
    fn parents_of_real_names_are_nodes() {
        assert_eq!(p("dc2.internal."), ClusterNode { cluster: "dc2" });
        assert_eq!(p("service.internal."), Branch { cluster: None });
        assert_eq!(
            p("instance.dc2.internal."),
            Branch {
                cluster: Some("dc2")
            }
        );
        assert_eq!(
            p("_tcp.service.internal."),
            ProtoNode {
                cluster: None,
                tag: None
            }
        );
        assert_eq!(
            p("_v2.service.internal."),
            ProtoNode {
                cluster: None,
                tag: Some("v2")
            }
        );
        assert_eq!(
            p("web.instance.internal."),
            InstanceParent {
                cluster: None,
                service: "web"
            }
        );
    }

    #[test]
    fn dns_sd_names() {
        assert_eq!(
            p("_services._dns-sd._udp.service.internal."),
            ServiceTypes { cluster: None }
        );
        assert_eq!(
            p("_dns-sd._udp.service.internal."),
            Branch { cluster: None }
        );
        assert_eq!(
            p("web-1._web._tcp.service.dc2.internal."),
            DnssdInstance {
                cluster: Some("dc2"),
                service: "web",
                id: "web-1"
            }
        );
        assert_eq!(p("web-1._web._v2.service.internal."), Unknown);
    }

    #[test]
    fn everything_else_is_unknown() {
        for name in [
            "a.b.web.service.internal.",
            "x.web-1.web.instance.internal.",
            "_web.v2.service.internal.",
            "foo.bar.internal.",
            "a.b.c.d.e.internal.",
        ] {
            assert_eq!(p(name), Unknown, "{name}");
        }
    }
}
