//! The projection: registry state turned into ready-made DNS data.
//!
//! On every registry change it rebuilds only the changed service, in every
//! cluster it appears in, and publishes a new [`Snapshot`] with one atomic
//! pointer swap. The DNS side only ever loads the current snapshot: no lock
//! shared with writers, no waiting. It never sees the registry itself.

pub mod order;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::TXT;
use parking_lot::Mutex;

use crate::registry::model::{Health, Instance, LbPolicy, ServiceSettings, Tag};
use crate::registry::{Observer, ServiceView};
use order::Candidate;

/// What the projection needs to know of the DNS layout.
#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// The registry zone (`internal.`), lower case, fully qualified.
    pub domain: Name,
    /// This server's own cluster: its names carry no cluster label.
    pub cluster: String,
}

/// One instance, ready to be answered: 16 bytes beside the registration it
/// was built from. Its address, port, TTL, tags and meta are read from that
/// registration, and its SRV target is its id before the service's
/// [`ServiceRecords::target_suffix`]: a copy of either per instance would
/// cost more memory than the rest of the projection (a million instances are
/// a target size).
#[derive(Debug, Clone)]
pub struct InstanceRecords {
    /// The registration these records were built from, shared with the
    /// registry.
    pub source: Arc<Instance>,
    /// The priority it is answered at (its own, one lower in warning).
    pub priority: u16,
    /// Its weight.
    pub weight: u16,
    /// Whether DNS may hand it out (status and health).
    pub served: bool,
    /// Whether its status is UP, whatever its health (for fail-open).
    pub up: bool,
}

impl InstanceRecords {
    /// Its id (lower case).
    pub fn id(&self) -> &str {
        self.source.id.as_str()
    }

    /// A or AAAA data.
    pub fn address(&self) -> IpAddr {
        self.source.spec.address
    }

    /// SRV port.
    pub fn port(&self) -> u16 {
        self.source.spec.port
    }

    /// TTL of every record about it, in seconds.
    pub fn ttl(&self) -> u32 {
        self.source.spec.ttl
    }

    /// Its meta as TXT strings `key=value` (one empty string when it has
    /// none, as RFC 6763 §6.1 asks). Made per TXT answer rather than kept:
    /// few queries ask for it, and every instance would pay for it.
    pub fn txt(&self) -> TXT {
        let meta = &self.source.spec.meta;
        let mut strings: Vec<String> = meta.txt_strings().map(str::to_owned).collect();
        if strings.is_empty() {
            strings.push(String::new());
        }
        TXT::new(strings)
    }

    /// Whether it carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.source
            .spec
            .tags
            .binary_search_by(|t| t.as_str().cmp(tag))
            .is_ok()
    }
}

/// One service in one cluster, ready to be answered.
#[derive(Debug)]
pub struct ServiceRecords {
    /// Ordering policy within a tier.
    pub lb: LbPolicy,
    /// Clusters to answer from, in order, when this one has nothing served.
    pub failover: Box<[Arc<str>]>,
    /// Serve every UP instance when none is healthy anywhere.
    pub fail_open: bool,
    /// Round-robin position; carried over when the service is rebuilt.
    rotation: Arc<AtomicU64>,
    /// Every registered instance in this cluster, served or not, sorted by
    /// priority then id (the order `order::order` expects).
    pub instances: Box<[InstanceRecords]>,
    /// Positions in `instances`, ordered by id (searched by id).
    by_id: Box<[u32]>,
    /// Every tag any instance carries.
    tags: HashSet<Arc<str>>,
    /// Seed of its instances' rendezvous keys (`order::seeded_key`): the
    /// keys are made per query, and only for `hash`, rather than kept.
    key_seed: u64,
    /// What follows an instance's id in its name, the SRV target:
    /// `<service>.instance[.<cluster>].<domain>`, in wire form (lower case,
    /// uncompressed, ending in the root label).
    target_suffix: Box<[u8]>,
}

impl ServiceRecords {
    /// The instance `id`, served or not.
    pub fn instance(&self, id: &str) -> Option<&InstanceRecords> {
        self.position(id).map(|i| &self.instances[i])
    }

    /// The position of instance `id` in `instances`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id
            .binary_search_by(|&i| self.instances[i as usize].id().cmp(id))
            .ok()
            .map(|found| self.by_id[found] as usize)
    }

    /// What ordering needs of `instance`; its rendezvous key only when
    /// the service orders by `hash` (0 otherwise).
    pub fn candidate(&self, instance: &InstanceRecords) -> Candidate {
        Candidate {
            priority: instance.priority,
            weight: instance.weight,
            key: if self.lb == LbPolicy::Hash {
                order::seeded_key(self.key_seed, instance.id())
            } else {
                0
            },
        }
    }

    /// The length of `instance`'s SRV target in wire form.
    pub fn target_len(&self, instance: &InstanceRecords) -> usize {
        1 + instance.id().len() + self.target_suffix.len()
    }

    /// Appends `instance`'s SRV target, `<id>.<service>.instance[.<cluster>].<domain>`,
    /// in wire form (uncompressed, as RFC 2782 asks of SRV targets).
    pub fn write_target(&self, instance: &InstanceRecords, out: &mut Vec<u8>) {
        let id = instance.id().as_bytes();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.target_suffix);
    }

    /// `instance`'s SRV target as a name (for answers built as records).
    pub fn target(&self, instance: &InstanceRecords) -> Name {
        let mut wire = Vec::with_capacity(self.target_len(instance));
        self.write_target(instance, &mut wire);
        let mut labels = Vec::with_capacity(8);
        let mut rest = &wire[..];
        while let Some((&len, after)) = rest.split_first()
            && len > 0
        {
            let (label, next) = after.split_at(usize::from(len));
            labels.push(label);
            rest = next;
        }
        let mut name = Name::from_labels(labels).expect("built from a valid name");
        name.set_fqdn(true);
        name
    }

    /// Whether any instance carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// The round-robin position for one query (advances it).
    pub fn next_rotation(&self) -> u64 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

/// Shards of a cluster's service map (a power of two).
const SHARDS: usize = 256;

/// Services by name, one shard of them.
type ServiceShard = HashMap<Arc<str>, Arc<ServiceRecords>>;

/// Every service of one cluster.
///
/// Services are split into [`SHARDS`] maps by a hash of their name, each
/// behind an `Arc`: a new snapshot copies the shard pointers, and a rebuild
/// copies only the shards of the services it changes. With one map, every
/// commit round copied (and later freed) an entry per service: with 10,000
/// services that was most of a round's time.
#[derive(Debug, Clone)]
pub struct ClusterRecords {
    services: Box<[Arc<ServiceShard>]>,
    /// How many services there are.
    count: usize,
    /// How many services use each tag, so tag names exist while one does.
    tag_uses: Arc<HashMap<Arc<str>, usize>>,
}

impl Default for ClusterRecords {
    fn default() -> Self {
        let empty = Arc::new(ServiceShard::new());
        Self {
            services: vec![empty; SHARDS].into_boxed_slice(),
            count: 0,
            tag_uses: Arc::default(),
        }
    }
}

/// The shard of the service `name`.
fn shard(name: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as usize) & (SHARDS - 1)
}

impl ClusterRecords {
    /// The service `name` in this cluster.
    pub fn service(&self, name: &str) -> Option<&ServiceRecords> {
        self.services[shard(name)].get(name).map(|s| &**s)
    }

    /// Every service here, by name (in no particular order).
    pub fn services(&self) -> impl Iterator<Item = (&str, &ServiceRecords)> {
        self.services
            .iter()
            .flat_map(|shard| shard.iter())
            .map(|(name, s)| (&**name, &**s))
    }

    /// How many services there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether any service here has an instance tagged `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tag_uses.contains_key(tag)
    }

    fn remove_service(&mut self, name: &str) -> Option<Arc<ServiceRecords>> {
        let shard = &mut self.services[shard(name)];
        if !shard.contains_key(name) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(name)?;
        self.count -= 1;
        if !old.tags.is_empty() {
            let tag_uses = Arc::make_mut(&mut self.tag_uses);
            for tag in &old.tags {
                if let Some(n) = tag_uses.get_mut(tag) {
                    *n -= 1;
                    if *n == 0 {
                        tag_uses.remove(tag);
                    }
                }
            }
        }
        Some(old)
    }

    fn insert_service(&mut self, name: Arc<str>, service: ServiceRecords) {
        if !service.tags.is_empty() {
            let tag_uses = Arc::make_mut(&mut self.tag_uses);
            for tag in &service.tags {
                *tag_uses.entry(tag.clone()).or_default() += 1;
            }
        }
        let shard = Arc::make_mut(&mut self.services[shard(&name)]);
        if shard.insert(name, Arc::new(service)).is_none() {
            self.count += 1;
        }
    }

    /// The service `name` in this cluster, shared: an answer can keep it.
    pub fn service_arc(&self, name: &str) -> Option<&Arc<ServiceRecords>> {
        self.services[shard(name)].get(name)
    }
}

/// An immutable view of everything DNS serves from the registry.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The registry index this snapshot reflects (the SOA serial).
    pub index: u64,
    /// The server's own cluster.
    local: Arc<str>,
    /// Clusters that have instances, and always the local one.
    clusters: HashMap<Arc<str>, ClusterRecords>,
}

impl Snapshot {
    /// An empty snapshot for a server in `local`.
    pub fn empty(local: &str) -> Self {
        let mut clusters = HashMap::new();
        clusters.insert(local.into(), ClusterRecords::default());
        Self {
            index: 0,
            local: local.into(),
            clusters,
        }
    }

    /// The cluster `name`, if it is known (the local one always is).
    pub fn cluster(&self, name: &str) -> Option<&ClusterRecords> {
        self.clusters.get(name)
    }

    /// The server's own cluster.
    pub fn local(&self) -> &ClusterRecords {
        &self.clusters[&self.local]
    }
}

/// Publishes snapshots; the registry's observer in a running server.
pub struct Projection {
    /// Names and the local cluster.
    config: ProjectionConfig,
    /// The current snapshot: DNS loads it, writers swap it.
    current: ArcSwap<Snapshot>,
    /// Serialises rebuilds (the registry already does; this keeps the
    /// projection correct on its own).
    writer: Mutex<()>,
}

impl Projection {
    /// A projection with an empty snapshot.
    pub fn new(config: ProjectionConfig) -> Self {
        let current = ArcSwap::from_pointee(Snapshot::empty(&config.cluster));
        Self {
            config,
            current,
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot. Lock-free; what DNS calls once per query.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, owned.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Rebuilds each of `services` in every cluster it was or is in, and
    /// publishes once. Services not among them keep their records as they
    /// are (the very allocations).
    pub fn rebuild(&self, services: &[ServiceView<'_>], index: u64) {
        let _writer = self.writer.lock();
        let mut next = Snapshot::clone(&self.current.load());
        for service in services {
            self.rebuild_service(&mut next, service);
        }
        let local = self.config.cluster.as_str();
        next.clusters
            .retain(|cluster, records| &**cluster == local || !records.is_empty());
        next.index = next.index.max(index);
        self.current.store(Arc::new(next));
    }

    fn rebuild_service(&self, next: &mut Snapshot, service: &ServiceView<'_>) {
        let name = service.name.as_str();
        let settings = service.settings.cloned().unwrap_or_default();

        let mut previous: HashMap<Arc<str>, Arc<ServiceRecords>> = HashMap::new();
        for (cluster, records) in next.clusters.iter_mut() {
            if let Some(old) = records.remove_service(name) {
                previous.insert(cluster.clone(), old);
            }
        }

        // Instances by cluster, in id order. A service is in one cluster or
        // a few: a list searched from the last one used beats hashing every
        // instance's cluster name.
        let mut by_cluster: Vec<(&str, Vec<&Arc<Instance>>)> = Vec::new();
        let mut last = 0;
        for &instance in &service.instances {
            let cluster = instance.spec.cluster.as_str();
            if by_cluster.get(last).is_none_or(|(c, _)| *c != cluster) {
                last = match by_cluster.iter().position(|(c, _)| *c == cluster) {
                    Some(found) => found,
                    None => {
                        by_cluster.push((cluster, Vec::with_capacity(service.instances.len())));
                        by_cluster.len() - 1
                    }
                };
            }
            by_cluster[last].1.push(instance);
        }
        if service.exists() && !by_cluster.iter().any(|(c, _)| *c == self.config.cluster) {
            // A service with settings but no local instances still exists locally.
            by_cluster.push((&self.config.cluster, Vec::new()));
        }
        let name: Arc<str> = name.into();
        for (cluster, instances) in by_cluster {
            let old = previous.remove(cluster);
            let records =
                self.service_records(&name, cluster, &settings, old.as_deref(), &instances);
            next.clusters
                .entry(cluster.into())
                .or_default()
                .insert_service(name.clone(), records);
        }
    }

    fn service_records(
        &self,
        service: &str,
        cluster: &str,
        settings: &ServiceSettings,
        old: Option<&ServiceRecords>,
        instances: &[&Arc<Instance>],
    ) -> ServiceRecords {
        // `instances` come in id order (`ServiceView`'s contract). A stable
        // sort by priority alone leaves ids in order within a priority;
        // `by_id` is then the inverse of that permutation.
        debug_assert!(
            instances.is_sorted_by(|a, b| a.id < b.id),
            "ServiceView::instances must be in id order"
        );
        let mut order: Vec<u32> = (0..instances.len() as u32).collect();
        order.sort_by_key(|&r| tier(instances[r as usize]));
        let mut by_id = vec![0u32; order.len()];
        for (position, &rank) in order.iter().enumerate() {
            by_id[rank as usize] = position as u32;
        }
        let built: Box<[InstanceRecords]> = order
            .iter()
            .map(|&r| instance_records(instances[r as usize]))
            .collect();
        let tags = instances
            .iter()
            .flat_map(|i| i.spec.tags.iter().map(Tag::shared))
            .collect();
        ServiceRecords {
            lb: settings.lb,
            failover: settings
                .failover
                .iter()
                .map(|c| Arc::from(c.as_str()))
                .collect(),
            fail_open: settings.fail_open,
            rotation: old.map(|o| o.rotation.clone()).unwrap_or_default(),
            instances: built,
            by_id: by_id.into_boxed_slice(),
            tags,
            key_seed: order::key_seed(service, cluster),
            target_suffix: self.target_suffix(service, cluster),
        }
    }

    /// `<service>.instance[.<cluster>].<domain>` in wire form.
    fn target_suffix(&self, service: &str, cluster: &str) -> Box<[u8]> {
        let mut labels: Vec<&str> = vec![service, "instance"];
        if cluster != self.config.cluster {
            labels.push(cluster);
        }
        let mut wire = Vec::with_capacity(64);
        for label in labels {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        for label in self.config.domain.iter() {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label);
        }
        wire.push(0);
        wire.into_boxed_slice()
    }
}

/// The priority `instance` is answered at: DESIGN §3, an instance in
/// warning drops one tier.
fn tier(instance: &Instance) -> u16 {
    let warning = instance.effective_health() == Health::Warning;
    instance.spec.priority.saturating_add(u16::from(warning))
}

/// The records of `instance`.
fn instance_records(instance: &Arc<Instance>) -> InstanceRecords {
    InstanceRecords {
        source: instance.clone(),
        priority: tier(instance),
        weight: instance.spec.weight,
        served: instance.is_served(),
        up: instance.spec.status.is_served(),
    }
}

impl Observer for Projection {
    fn services_changed(&self, services: &[ServiceView<'_>], index: u64) {
        self.rebuild(services, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServiceState;

    fn rebuild(p: &Projection, states: &[ServiceState], index: u64) {
        let views: Vec<_> = states.iter().map(ServiceState::view).collect();
        p.rebuild(&views, index);
    }
    use crate::registry::model::{Cluster, InstanceId, InstanceSpec, ServiceName, Tag};

    fn projection() -> Projection {
        Projection::new(ProjectionConfig {
            domain: Name::from_ascii("internal.").unwrap(),
            cluster: "dc1".into(),
        })
    }

    fn instance(id: &str, cluster: &str, tags: &[&str]) -> Instance {
        let mut spec = InstanceSpec::new("10.0.0.1".parse().unwrap(), 80);
        spec.cluster = Cluster::parse(cluster).unwrap();
        spec.tags = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
        spec.into_instance(InstanceId::parse(id).unwrap(), 1, 1)
    }

    /// Services `svc0`, `svc1`, ... with one local instance each.
    fn services(n: usize) -> Vec<ServiceState> {
        (0..n)
            .map(|i| {
                let mut s = state(vec![instance("a", "dc1", &[])]);
                s.name = ServiceName::parse(&format!("svc{i}")).unwrap();
                s
            })
            .collect()
    }

    fn state(instances: Vec<Instance>) -> ServiceState {
        ServiceState {
            name: ServiceName::parse("web").unwrap(),
            settings: None,
            instances: instances.into_iter().map(Arc::new).collect(),
        }
    }

    #[test]
    fn a_rebuild_replaces_one_service_and_keeps_the_others() {
        let p = projection();
        rebuild(
            &p,
            std::slice::from_ref(&state(vec![
                instance("a", "dc1", &["v2"]),
                instance("b", "dc2", &[]),
            ])),
            2,
        );
        let mut other = state(vec![instance("x", "dc1", &[])]);
        other.name = ServiceName::parse("api").unwrap();
        rebuild(&p, std::slice::from_ref(&other), 3);
        let before = p.load();
        let api_before = before.local().service_arc("api").unwrap().clone();

        rebuild(
            &p,
            std::slice::from_ref(&state(vec![instance("a", "dc1", &[])])),
            4,
        );
        let after = p.load();
        assert_eq!(after.index, 4);
        // The untouched service is the very same allocation.
        assert!(Arc::ptr_eq(
            &api_before,
            after.local().service_arc("api").unwrap()
        ));
        // dc2 lost its only service and is gone; the tag went with its last user.
        assert!(after.cluster("dc2").is_none());
        assert!(!after.local().has_tag("v2"));
        // The old snapshot is untouched.
        assert!(before.cluster("dc2").is_some() && before.local().has_tag("v2"));
    }

    #[test]
    fn records_are_ordered_by_priority_then_id_and_unchanged_ones_kept() {
        let p = projection();
        let with_priority = |id: &str, priority: u16| {
            let mut i = instance(id, "dc1", &[]);
            i.spec.priority = priority;
            Arc::new(i)
        };
        let ids = ["a", "b", "c", "d", "e", "f"];
        let priorities = [3u16, 1, 3, 0, 1, 2];
        let instances: Vec<_> = ids
            .iter()
            .zip(priorities)
            .map(|(id, pr)| with_priority(id, pr))
            .collect();
        let mut web = state(Vec::new());
        web.instances = instances.clone();
        rebuild(&p, std::slice::from_ref(&web), 1);
        let order = |snap: &Snapshot| -> Vec<String> {
            let svc = snap.local().service("web").unwrap();
            svc.instances.iter().map(|r| r.id().to_owned()).collect()
        };
        let first = p.load_full();
        assert_eq!(order(&first), ["d", "b", "e", "f", "a", "c"]);
        let svc = first.local().service("web").unwrap();
        for id in ids {
            assert_eq!(svc.instance(id).unwrap().id(), id);
        }
        assert!(svc.instance("zz").is_none());

        // Change "c" (to priority 0) and drop "e"; the others keep their records.
        web.instances[2] = with_priority("c", 0);
        web.instances.remove(4);
        rebuild(&p, std::slice::from_ref(&web), 2);
        let second = p.load_full();
        assert_eq!(order(&second), ["c", "d", "b", "f", "a"]);
        let (old, new) = (
            first.local().service("web").unwrap(),
            second.local().service("web").unwrap(),
        );
        for id in ["a", "b", "d", "f"] {
            let (a, b) = (old.instance(id).unwrap(), new.instance(id).unwrap());
            assert!(Arc::ptr_eq(&a.source, &b.source), "{id} kept");
            assert_eq!((a.priority, a.weight), (b.priority, b.weight), "{id}");
        }
        assert!(new.instance("e").is_none());
        assert_eq!(new.instance("c").unwrap().priority, 0);
    }

    #[test]
    fn a_rebuild_copies_only_the_shard_it_changes() {
        let p = projection();
        let states = services(1000);
        rebuild(&p, &states, 1);
        let before = p.load_full();
        rebuild(&p, std::slice::from_ref(&states[7]), 2);
        let after = p.load_full();
        let (old, new) = (before.local(), after.local());
        assert_eq!((old.len(), new.len()), (1000, 1000));
        let changed = shard("svc7");
        for (i, (a, b)) in old.services.iter().zip(new.services.iter()).enumerate() {
            assert_eq!(Arc::ptr_eq(a, b), i != changed, "shard {i}");
        }
        let mut names: Vec<_> = new.services().map(|(name, _)| name.to_owned()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn targets_name_the_cluster_only_when_it_is_not_local() {
        let p = projection();
        rebuild(
            &p,
            std::slice::from_ref(&state(vec![
                instance("a", "dc1", &[]),
                instance("b", "dc2", &[]),
            ])),
            1,
        );
        let s = p.load();
        let web = s.local().service("web").unwrap();
        let a = web.instance("a").unwrap();
        assert_eq!(web.target(a).to_ascii(), "a.web.instance.internal.");
        assert_eq!(web.target_len(a), "a.web.instance.internal.".len() + 1);
        let web2 = s.cluster("dc2").unwrap().service("web").unwrap();
        let b = web2.instance("b").unwrap();
        assert_eq!(web2.target(b).to_ascii(), "b.web.instance.dc2.internal.");
    }

    #[test]
    fn rotation_survives_a_rebuild() {
        let p = projection();
        rebuild(
            &p,
            std::slice::from_ref(&state(vec![instance("a", "dc1", &[])])),
            1,
        );
        p.load().local().service("web").unwrap().next_rotation();
        rebuild(
            &p,
            std::slice::from_ref(&state(vec![
                instance("a", "dc1", &[]),
                instance("b", "dc1", &[]),
            ])),
            2,
        );
        assert_eq!(p.load().local().service("web").unwrap().next_rotation(), 1);
    }

    #[test]
    fn a_changed_instance_is_served_as_it_is_now() {
        let p = projection();
        let a = Arc::new(instance("a", "dc1", &[]));
        let with = |b: Instance| ServiceState {
            name: ServiceName::parse("web").unwrap(),
            settings: None,
            instances: vec![a.clone(), Arc::new(b)],
        };
        let mut b = instance("b", "dc1", &[]);
        rebuild(&p, &[with(b.clone())], 1);
        let before = p.load_full();
        b.spec.port = 81;
        rebuild(&p, &[with(b)], 2);
        let after = p.load();
        let (web, web_after) = (
            before.local().service("web").unwrap(),
            after.local().service("web").unwrap(),
        );
        assert!(Arc::ptr_eq(
            &web.instance("a").unwrap().source,
            &web_after.instance("a").unwrap().source
        ));
        assert_eq!(web.instance("b").unwrap().port(), 80);
        assert_eq!(web_after.instance("b").unwrap().port(), 81);
    }

    #[test]
    fn one_publish_for_many_services() {
        let p = projection();
        let services = services(50);
        let before = p.load_full();
        rebuild(&p, &services, 7);
        let after = p.load();
        assert_eq!((after.index, after.local().len()), (7, 50));
        assert_eq!(before.local().len(), 0);
    }
}
