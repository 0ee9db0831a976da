//! Pod IPs for process pods: which address belongs to which pod, and putting
//! addresses on (and off) the pod side of the veth.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::Error;
use crate::cluster::network;

/// Addresses handed out, by pod UID.
///
/// Allocation goes round-robin through the range (as the CNI `host-local`
/// plugin does) rather than always taking the lowest free address: a just
/// released address is then not handed to the next pod at once, so a stale
/// endpoint somewhere (an Envoy that has not seen the deletion yet, a test
/// checking that a deleted pod stopped answering) never reaches a different
/// pod by accident.
pub struct Ipam {
    inner: Mutex<Inner>,
}

struct Inner {
    owners: BTreeMap<Ipv4Addr, String>,
    /// Where the search for the next free address starts.
    next: u32,
}

fn range() -> (u32, u32) {
    let (first, last) = network::PROCESS_POD_IPS;
    (u32::from(first), u32::from(last))
}

pub fn in_range(ip: Ipv4Addr) -> bool {
    let (first, last) = range();
    (first..=last).contains(&u32::from(ip))
}

impl Ipam {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                owners: BTreeMap::new(),
                next: range().0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the map consistent
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record an address found on an existing pod, so that restarting the
    /// runner never hands it out twice. First claim wins.
    pub fn reserve(&self, ip: Ipv4Addr, uid: &str) -> bool {
        if !in_range(ip) {
            return false;
        }
        let mut inner = self.lock();
        if inner.owners.contains_key(&ip) {
            return false;
        }
        inner.owners.insert(ip, uid.to_owned());
        let after = u32::from(ip).saturating_add(1);
        if after > inner.next && after <= range().1 {
            inner.next = after;
        }
        true
    }

    /// The address this pod already holds, if any.
    pub fn owned_by(&self, uid: &str) -> Option<Ipv4Addr> {
        self.lock()
            .owners
            .iter()
            .find(|(_, owner)| owner.as_str() == uid)
            .map(|(ip, _)| *ip)
    }

    /// The pod's address: the one it holds, or the next free one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, Error> {
        if let Some(ip) = self.owned_by(uid) {
            return Ok(ip);
        }
        let (first, last) = range();
        let mut inner = self.lock();
        let size = last - first + 1;
        let start = inner.next.clamp(first, last);
        for offset in 0..size {
            let candidate = first + (start - first + offset) % size;
            let ip = Ipv4Addr::from(candidate);
            if let Entry::Vacant(slot) = inner.owners.entry(ip) {
                slot.insert(uid.to_owned());
                inner.next = if candidate == last {
                    first
                } else {
                    candidate + 1
                };
                return Ok(ip);
            }
        }
        Err(Error::AddressesExhausted)
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.lock().owners.remove(&ip);
    }

    pub fn is_owned(&self, ip: Ipv4Addr) -> bool {
        self.lock().owners.contains_key(&ip)
    }
}

/// Put the address on the pod side of the veth; already present is fine.
pub async fn add_address(ip: Ipv4Addr) -> Result<(), Error> {
    let cidr = format!("{ip}/32");
    match ip_command(vec![
        "-n".into(),
        network::NETNS.into(),
        "addr".into(),
        "add".into(),
        cidr,
        "dev".into(),
        network::POD_IFACE.into(),
    ])
    .await
    {
        // Older iproute2 says "File exists", newer "Address already assigned".
        Err(Error::Network(message))
            if message.contains("File exists") || message.contains("already assigned") =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}

/// Take the address off again; already absent (or no namespace) is fine.
pub async fn remove_address(ip: Ipv4Addr) -> Result<(), Error> {
    let cidr = format!("{ip}/32");
    match ip_command(vec![
        "-n".into(),
        network::NETNS.into(),
        "addr".into(),
        "del".into(),
        cidr,
        "dev".into(),
        network::POD_IFACE.into(),
    ])
    .await
    {
        Err(Error::Network(message))
            if message.contains("Cannot assign requested address")
                || message.contains("Address not found")
                || message.contains("No such file or directory")
                || message.contains("Cannot find device") =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}

/// The process-pod addresses currently on the pod side of the veth.
pub async fn addresses() -> Result<Vec<Ipv4Addr>, Error> {
    let out = ip_command(vec![
        "-n".into(),
        network::NETNS.into(),
        "-o".into(),
        "-4".into(),
        "addr".into(),
        "show".into(),
        "dev".into(),
        network::POD_IFACE.into(),
    ])
    .await?;
    Ok(parse_addresses(&out))
}

fn parse_addresses(out: &str) -> Vec<Ipv4Addr> {
    // `-o` prints one line per address: `3: vg-pods    inet 10.233.1.1/32 scope global vg-pods …`
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let (ip, prefix) = words.next()?.split_once('/')?;
            (prefix == "32").then_some(())?;
            ip.parse().ok()
        })
        .filter(|ip| in_range(*ip))
        .collect()
}

async fn ip_command(args: Vec<String>) -> Result<String, Error> {
    // `ip` is quick but blocking; keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        network::ip(&args).map_err(|e| Error::Network(format!("{e:#}")))
    })
    .await
    .map_err(|e| Error::Network(format!("`ip` task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_goes_round_robin_and_skips_reserved_addresses() {
        let ipam = Ipam::new();
        let first = network::PROCESS_POD_IPS.0;
        let second = Ipv4Addr::from(u32::from(first) + 1);
        let third = Ipv4Addr::from(u32::from(first) + 2);
        assert!(ipam.reserve(second, "b"));
        assert!(!ipam.reserve(second, "c"));
        assert_eq!(ipam.allocate("c").unwrap(), third);
        assert_eq!(ipam.allocate("c").unwrap(), third);
        ipam.release(third);
        assert_eq!(
            ipam.allocate("d").unwrap(),
            Ipv4Addr::from(u32::from(third) + 1)
        );
        assert_eq!(ipam.owned_by("b"), Some(second));
    }

    #[test]
    fn allocation_wraps_around_to_released_addresses() {
        let ipam = Ipam::new();
        let last = network::PROCESS_POD_IPS.1;
        assert!(ipam.reserve(last, "z"));
        let first = ipam.allocate("a").unwrap();
        assert_eq!(first, network::PROCESS_POD_IPS.0);
    }

    #[test]
    fn parses_ip_addr_output() {
        let out = "3: vg-pods    inet 10.233.0.2/16 brd 10.233.255.255 scope global vg-pods\\       valid_lft forever\n\
                   3: vg-pods    inet 10.233.1.7/32 scope global vg-pods\\       valid_lft forever\n";
        assert_eq!(parse_addresses(out), vec![Ipv4Addr::new(10, 233, 1, 7)]);
    }
}
