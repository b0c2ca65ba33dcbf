//! Where a student's forwarded connections may go, and where `ssh -R` may listen.
//!
//! Two layers. The environment's policy (from the controller's catalogue) says whether
//! forwarding is on and which destinations besides the container itself are allowed.
//! Under it, the agent's own guard refuses, whatever the catalogue says: this host's
//! addresses (agent, controller, Redis and proxies may listen there), the container
//! networks (other students' containers), link-local and multicast addresses, and the
//! operator's `forward_deny` blocks. The host's other networks (the LAN) are refused
//! unless an allow rule names them explicitly; a `*` rule never opens them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use labssh_proto::forwarding::{self, Rule};
use labssh_proto::net::{canonical, contains, IpNet};
use labssh_proto::pb;

/// Ports below this need root to listen on, as with sshd.
const PRIVILEGED_PORTS: u16 = 1024;

/// An environment's forwarding policy, parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Environment name, for messages.
    env: String,
    local: bool,
    remote: bool,
    gateway_ports: bool,
    /// `ssh -A`: an agent socket in the container.
    forward_agent: bool,
    /// `ssh -X`: a display on the container's loopback.
    forward_x11: bool,
    run_as_root: bool,
    rules: Vec<Rule>,
    /// The rules as written, for messages.
    rule_text: Vec<String>,
}

/// What the agent refuses whatever the catalogue says.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// This host's own addresses.
    host_addresses: Vec<IpAddr>,
    /// Networks of container bridges on this host.
    container_nets: Vec<IpNet>,
    /// The host's other networks: only explicit rules open them.
    host_nets: Vec<IpNet>,
    /// The operator's `forward_deny`.
    denied: Vec<IpNet>,
}

/// A refusal, in words for the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Policy {
    /// The policy of `env`; absent means on, to the container itself only.
    pub fn of(env: &pb::Environment) -> Policy {
        let p = env.forwarding.clone().unwrap_or(pb::ForwardingPolicy {
            local: true,
            remote: true,
            allow: Vec::new(),
            gateway_ports: false,
            forward_agent: true,
            forward_x11: true,
        });
        // The controller validated the rules; a bad one here is skipped, never widened.
        let (rules, problems) = forwarding::parse_all(&p.allow);
        for problem in problems {
            tracing::warn!(environment = %env.name, "ignoring forwarding rule: {problem}");
        }
        Policy {
            env: env.name.clone(),
            local: p.local,
            remote: p.remote,
            gateway_ports: p.gateway_ports,
            forward_agent: p.forward_agent,
            forward_x11: p.forward_x11,
            run_as_root: env.run_as_root,
            rules,
            rule_text: p.allow,
        }
    }

    /// Refuses `ssh -L`/`-D` outright when the environment turns it off.
    pub fn check_local_enabled(&self) -> Result<(), Refused> {
        if self.local {
            Ok(())
        } else {
            Err(Refused(format!(
                "port forwarding (ssh -L, ssh -D) is turned off in environment '{}'",
                self.env
            )))
        }
    }

    /// `ssh -L PORT:/PATH`: local forwarding on, and a path inside the container.
    pub fn check_local_socket(&self, path: &str) -> Result<(), Refused> {
        self.check_local_enabled()?;
        super::socket_path::check(path)
    }

    /// `ssh -R /PATH:...`: remote forwarding on, and a path inside the container.
    pub fn check_remote_socket(&self, path: &str) -> Result<(), Refused> {
        self.check_remote_enabled()?;
        super::socket_path::check(path)
    }

    /// `ssh -A`: agent forwarding on, and a path inside the container. Judged apart
    /// from `ssh -R`: an environment may allow one and not the other.
    pub fn check_agent_socket(&self, path: &str) -> Result<(), Refused> {
        if !self.forward_agent {
            return Err(Refused(format!(
                "agent forwarding (ssh -A) is turned off in environment '{}'",
                self.env
            )));
        }
        super::socket_path::check(path)
    }

    /// `ssh -X`: X11 forwarding on. Judged apart from `ssh -R`, like `ssh -A`.
    pub fn check_x11(&self) -> Result<(), Refused> {
        if self.forward_x11 {
            Ok(())
        } else {
            Err(Refused(format!(
                "X11 forwarding (ssh -X) is turned off in environment '{}'",
                self.env
            )))
        }
    }

    /// Refuses `ssh -R` outright when the environment turns it off.
    fn check_remote_enabled(&self) -> Result<(), Refused> {
        if self.remote {
            Ok(())
        } else {
            Err(Refused(format!(
                "remote forwarding (ssh -R) is turned off in environment '{}'",
                self.env
            )))
        }
    }

    /// Whether an allow rule names the host `name` for `port`. Such a name is the
    /// operator's, so the agent resolves it with its own resolver: the container's
    /// `/etc/hosts` belongs to a root student, who could point the name anywhere.
    pub fn names_host(&self, name: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.names(name, port))
    }

    /// Judges one resolved address of a destination the student asked for as `name`.
    /// `own` are the container's own addresses.
    pub fn check_destination(
        &self,
        guard: &Guard,
        own: &[IpAddr],
        name: &str,
        target: SocketAddr,
    ) -> Result<(), Refused> {
        self.check_local_enabled()?;
        let ip = canonical(target.ip());
        let port = target.port();
        if is_self(ip, own) {
            return Ok(());
        }
        if let Some(why) = guard.hard_refusal(ip) {
            return Err(Refused(format!(
                "forwarding to {name}:{port} ({ip}) is not allowed: {why}"
            )));
        }
        let on_host_net = guard.host_nets.iter().any(|n| contains(n, ip));
        let allowed = self
            .rules
            .iter()
            .any(|r| r.allows(name, ip, port) && (!on_host_net || !r.is_wildcard_host()));
        if allowed {
            return Ok(());
        }
        let allowed_list = if self.rule_text.is_empty() {
            "only your own container (localhost)".to_owned()
        } else {
            format!(
                "your own container (localhost) and {}",
                self.rule_text.join(", ")
            )
        };
        Err(Refused(format!(
            "forwarding to {name}:{port} is not allowed in environment '{}'; allowed: {allowed_list}",
            self.env
        )))
    }

    /// Where `ssh -R` with bind address `host` and `port` listens in the container:
    /// loopback unless the environment allows gateway ports.
    pub fn listen_address(
        &self,
        own: &[IpAddr],
        host: &str,
        port: u32,
    ) -> Result<SocketAddr, Refused> {
        self.check_remote_enabled()?;
        let port =
            u16::try_from(port).map_err(|_| Refused(format!("port {port} is not a TCP port")))?;
        if port != 0 && port < PRIVILEGED_PORTS && !self.run_as_root {
            return Err(Refused(format!(
                "port {port} is privileged; use a port from {PRIVILEGED_PORTS} up"
            )));
        }
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ip = match host {
            "localhost" | "127.0.0.1" => loopback,
            "::1" | "[::1]" => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ if !self.gateway_ports => loopback,
            "" | "*" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            other => {
                let ip: IpAddr = other
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| {
                        Refused(format!(
                            "listen address {other:?} must be localhost, *, or one of the container's addresses"
                        ))
                    })?;
                if !is_self(canonical(ip), own) {
                    return Err(Refused(format!(
                        "{ip} is not one of your container's addresses"
                    )));
                }
                ip
            }
        };
        Ok(SocketAddr::new(ip, port))
    }
}

/// Loopback, unspecified (which means the local host) or one of the container's own
/// addresses: the container itself.
fn is_self(ip: IpAddr, own: &[IpAddr]) -> bool {
    ip.is_loopback() || ip.is_unspecified() || own.iter().any(|o| canonical(*o) == ip)
}

impl Guard {
    /// The guard for this host's interfaces `(name, address, prefix length)`; `deny`
    /// are the operator's extra blocks. `None` when the interfaces could not be read:
    /// then all private space is refused.
    pub fn from_interfaces(deny: &[IpNet], interfaces: Option<&[(String, IpAddr, u8)]>) -> Guard {
        let mut guard = Guard {
            denied: deny.to_vec(),
            ..Guard::default()
        };
        for (name, addr, prefix) in interfaces.unwrap_or_default() {
            guard.add_interface(name, *addr, *prefix);
        }
        guard
    }

    /// Whether `ip` is one of this host's own addresses.
    #[cfg(test)]
    pub fn is_host_address(&self, ip: IpAddr) -> bool {
        self.host_addresses.contains(&canonical(ip))
    }

    /// Notes one address of one host interface.
    pub fn add_interface(&mut self, name: &str, addr: IpAddr, prefix: u8) {
        let addr = canonical(addr);
        if addr.is_loopback() {
            return; // a container's loopback is its own
        }
        self.host_addresses.push(addr);
        let Ok(net) = IpNet::new(addr, prefix) else {
            return;
        };
        if is_container_bridge(name) {
            self.container_nets.push(net);
        } else if !is_link_local(addr) {
            self.host_nets.push(net);
        }
    }

    /// Why `ip` is refused whatever the catalogue allows, if it is.
    fn hard_refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.host_addresses.contains(&ip) {
            return Some("that is the lab server itself");
        }
        if self.container_nets.iter().any(|n| contains(n, ip)) {
            return Some(
                "that is the containers' network; other students' containers are off limits",
            );
        }
        if is_link_local(ip) || ip.is_multicast() || is_broadcast(ip) {
            return Some("link-local, multicast and broadcast addresses are off limits");
        }
        if self.denied.iter().any(|n| contains(n, ip)) {
            return Some("the lab's operators closed that network to forwarding");
        }
        // A container bridge also answers on the network's first address and others
        // Docker may add later; with no interface list, all private space is closed.
        if self.host_addresses.is_empty() && is_private(ip) {
            return Some(
                "private networks are closed while the lab server's own addresses are unknown",
            );
        }
        None
    }
}

/// Docker's default and user-defined bridges, and common CNI bridges.
fn is_container_bridge(name: &str) -> bool {
    [
        "docker", "br-", "veth", "cni", "cbr", "flannel", "cali", "weave", "podman", "lxc",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labssh_proto::net::parse_net;

    fn env(allow: &[&str]) -> pb::Environment {
        pb::Environment {
            name: "default".into(),
            forwarding: Some(pb::ForwardingPolicy {
                local: true,
                remote: true,
                allow: allow.iter().map(|s| s.to_string()).collect(),
                gateway_ports: false,
                forward_agent: true,
                forward_x11: true,
            }),
            ..Default::default()
        }
    }

    fn guard() -> Guard {
        let mut g = Guard::default();
        g.add_interface("lo", "127.0.0.1".parse().unwrap(), 8);
        g.add_interface("eth0", "10.0.0.5".parse().unwrap(), 24);
        g.add_interface("docker0", "172.17.0.1".parse().unwrap(), 16);
        g.add_interface("br-1234", "172.18.0.1".parse().unwrap(), 16);
        g.denied.push(parse_net("192.0.2.0/24").unwrap());
        g
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x11_forwarding_is_judged_by_its_own_switch() {
        assert_eq!(Policy::of(&pb::Environment::default()).check_x11(), Ok(()));
        let mut e = env(&[]);
        e.forwarding.as_mut().unwrap().remote = false;
        assert_eq!(Policy::of(&e).check_x11(), Ok(()));
        e.forwarding.as_mut().unwrap().forward_x11 = false;
        let refused = Policy::of(&e).check_x11().unwrap_err();
        assert!(
            refused.0.contains("X11 forwarding (ssh -X) is turned off"),
            "{refused}"
        );
        assert_eq!(Policy::of(&e).check_agent_socket("/tmp/a.sock"), Ok(()));
    }

    #[test]
    fn agent_forwarding_is_judged_by_its_own_switch() {
        let path = "/tmp/labssh-agent.abc.sock";
        // No policy at all: on.
        assert_eq!(
            Policy::of(&pb::Environment::default()).check_agent_socket(path),
            Ok(())
        );
        let mut e = env(&[]);
        assert_eq!(Policy::of(&e).check_agent_socket(path), Ok(()));
        // `ssh -R` off leaves `ssh -A` alone, and the other way round.
        e.forwarding.as_mut().unwrap().remote = false;
        assert_eq!(Policy::of(&e).check_agent_socket(path), Ok(()));
        let mut off = env(&[]);
        off.forwarding.as_mut().unwrap().forward_agent = false;
        let refused = Policy::of(&off).check_agent_socket(path).unwrap_err();
        assert!(
            refused
                .0
                .contains("agent forwarding (ssh -A) is turned off"),
            "{refused}"
        );
        assert_eq!(Policy::of(&off).check_remote_socket(path), Ok(()));
        // The path rules still hold.
        assert!(Policy::of(&e).check_agent_socket("relative.sock").is_err());
    }

    #[test]
    fn default_is_the_container_itself_only() {
        let p = Policy::of(&pb::Environment {
            name: "x".into(),
            ..Default::default()
        });
        let own: Vec<IpAddr> = vec!["172.17.0.9".parse().unwrap()];
        let g = guard();
        assert!(p
            .check_destination(&g, &own, "localhost", sa("127.0.0.1:3389"))
            .is_ok());
        assert!(p.check_destination(&g, &own, "::1", sa("[::1]:22")).is_ok());
        assert!(p
            .check_destination(&g, &own, "me", sa("172.17.0.9:80"))
            .is_ok());
        let e = p
            .check_destination(&g, &own, "example.org", sa("93.184.216.34:443"))
            .unwrap_err();
        assert!(e.0.contains("only your own container"), "{e:?}");
    }

    #[test]
    fn hard_limits_hold_even_for_star() {
        let p = Policy::of(&env(&["*:*"]));
        let own: Vec<IpAddr> = vec!["172.17.0.9".parse().unwrap()];
        let g = guard();
        for (target, why) in [
            ("172.17.0.10:22", "containers' network"),
            ("172.18.3.4:22", "containers' network"),
            ("172.17.0.1:7001", "lab server itself"),
            ("10.0.0.5:6379", "lab server itself"),
            ("169.254.169.254:80", "link-local"),
            ("192.0.2.7:80", "operators closed"),
        ] {
            let e = p.check_destination(&g, &own, "x", sa(target)).unwrap_err();
            assert!(e.0.contains(why), "{target}: {e:?}");
        }
        // The LAN needs an explicit rule; * does not open it.
        let e = p
            .check_destination(&g, &own, "x", sa("10.0.0.7:22"))
            .unwrap_err();
        assert!(e.0.contains("not allowed in environment"), "{e:?}");
        assert!(p
            .check_destination(&g, &own, "x", sa("93.184.216.34:443"))
            .is_ok());
        let p = Policy::of(&env(&["10.0.0.7:22"]));
        assert!(p
            .check_destination(&g, &own, "x", sa("10.0.0.7:22"))
            .is_ok());
        assert!(p
            .check_destination(&g, &own, "x", sa("10.0.0.7:23"))
            .is_err());
    }

    #[test]
    fn named_hosts_are_the_agents_to_resolve() {
        let p = Policy::of(&env(&["license.example.edu:27000", "*:*", "10.0.0.0/8:22"]));
        assert!(p.names_host("license.example.edu", 27000));
        assert!(p.names_host("LICENSE.example.edu.", 27000));
        assert!(
            !p.names_host("license.example.edu", 22),
            "only * allows that"
        );
        assert!(!p.names_host("localhost", 22));
        assert!(!p.names_host("db", 22), "an address block names no host");
    }

    #[test]
    fn unknown_interfaces_close_private_space() {
        let p = Policy::of(&env(&["*:*"]));
        let g = Guard::from_interfaces(&[], None);
        let e = p
            .check_destination(&g, &[], "x", sa("10.1.2.3:22"))
            .unwrap_err();
        assert!(e.0.contains("private networks are closed"), "{e:?}");
        let interfaces = [("eth0".to_owned(), "10.0.0.5".parse().unwrap(), 24)];
        let g = Guard::from_interfaces(&[], Some(&interfaces));
        assert!(g.is_host_address("10.0.0.5".parse().unwrap()));
        assert!(g.is_host_address("::ffff:10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn turned_off_says_so() {
        let mut e = env(&[]);
        e.forwarding.as_mut().unwrap().local = false;
        e.forwarding.as_mut().unwrap().remote = false;
        let p = Policy::of(&e);
        let err = p
            .check_destination(&guard(), &[], "localhost", sa("127.0.0.1:1"))
            .unwrap_err();
        assert!(err.0.contains("turned off"), "{err:?}");
        assert!(p
            .listen_address(&[], "localhost", 8080)
            .unwrap_err()
            .0
            .contains("turned off"));
    }

    #[test]
    fn listen_addresses() {
        let p = Policy::of(&env(&[]));
        let own: Vec<IpAddr> = vec!["172.17.0.9".parse().unwrap()];
        assert_eq!(
            p.listen_address(&own, "localhost", 8080).unwrap(),
            sa("127.0.0.1:8080")
        );
        // Without gateway ports, everything binds loopback (like sshd's default).
        assert_eq!(p.listen_address(&own, "", 0).unwrap(), sa("127.0.0.1:0"));
        assert!(p
            .listen_address(&own, "localhost", 80)
            .unwrap_err()
            .0
            .contains("privileged"));
        assert!(p.listen_address(&own, "localhost", 70000).is_err());
        let mut e = env(&[]);
        e.forwarding.as_mut().unwrap().gateway_ports = true;
        let p = Policy::of(&e);
        assert_eq!(
            p.listen_address(&own, "*", 9000).unwrap(),
            sa("0.0.0.0:9000")
        );
        assert_eq!(
            p.listen_address(&own, "172.17.0.9", 9000).unwrap(),
            sa("172.17.0.9:9000")
        );
        assert!(p.listen_address(&own, "172.17.0.10", 9000).is_err());
    }
}
