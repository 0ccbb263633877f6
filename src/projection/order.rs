//! Answer ordering (DESIGN §3): priority tiers first, then the service's
//! policy within each tier. Pure functions over candidates and an injected
//! random source, so tests fix the seed and check distributions.

use rand::Rng;
use rand::seq::SliceRandom;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::registry::model::LbPolicy;

/// What ordering needs to know of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Tier: lower first.
    pub priority: u16,
    /// Share within the tier; never 0 (the registry refuses 0).
    pub weight: u16,
    /// Stable identity for rendezvous hashing (hash of service, cluster and id).
    pub key: u64,
}

/// Per-query inputs that are not random.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryContext {
    /// Round-robin position of this query (a per-service counter).
    pub rotation: u64,
    /// Hash of the client's address or ECS subnet, for `hash`.
    pub client: u64,
}

/// Tiers larger than this use exponential keys (Efraimidis–Spirakis), which
/// draw the same distribution in O(n log n) instead of O(n²).
const EXACT_WEIGHTED_MAX: usize = 64;

/// Orders `candidates` (which must be sorted by priority) into `out`, one
/// slot per candidate, as indexes into `candidates`: lowest priority tier
/// first, each tier ordered by `policy`. The caller provides `out`, so that
/// a small answer is ordered without allocating.
///
/// # Panics
///
/// If `out` and `candidates` differ in length.
pub fn order<R: Rng + ?Sized>(
    candidates: &[Candidate],
    policy: LbPolicy,
    ctx: QueryContext,
    rng: &mut R,
    out: &mut [usize],
) {
    debug_assert!(candidates.is_sorted_by_key(|c| c.priority));
    assert_eq!(out.len(), candidates.len(), "one slot per candidate");
    for (n, slot) in out.iter_mut().enumerate() {
        *slot = n;
    }
    let mut start = 0;
    while start < candidates.len() {
        let priority = candidates[start].priority;
        let end = start
            + candidates[start..]
                .iter()
                .take_while(|c| c.priority == priority)
                .count();
        let tier = &mut out[start..end];
        match policy {
            LbPolicy::Weighted => weighted(candidates, tier, rng),
            LbPolicy::RoundRobin => {
                let by = (ctx.rotation % tier.len() as u64) as usize;
                tier.rotate_left(by);
            }
            LbPolicy::Random => tier.shuffle(rng),
            LbPolicy::Hash => rendezvous(candidates, tier, ctx.client),
        }
        start = end;
    }
}

/// RFC 2782 weighted order with the erratum fixed: draw r uniformly from
/// [0, Σw) and take the first entry whose running sum exceeds r, so each entry
/// comes first with probability exactly w/Σw; repeat on the rest.
fn weighted<R: Rng + ?Sized>(candidates: &[Candidate], tier: &mut [usize], rng: &mut R) {
    if tier.len() > EXACT_WEIGHTED_MAX {
        return weighted_keys(candidates, tier, rng);
    }
    let mut total: u32 = tier.iter().map(|&i| u32::from(candidates[i].weight)).sum();
    for place in 0..tier.len().saturating_sub(1) {
        let r = rng.random_range(0..total);
        let mut running = 0;
        let mut chosen = place;
        for (offset, &i) in tier[place..].iter().enumerate() {
            running += u32::from(candidates[i].weight);
            if running > r {
                chosen = place + offset;
                break;
            }
        }
        tier.swap(place, chosen);
        total -= u32::from(candidates[tier[place]].weight);
    }
}

/// Weighted order by sorting on u^(1/w) (in log space): the same distribution
/// as successive weighted draws without replacement.
fn weighted_keys<R: Rng + ?Sized>(candidates: &[Candidate], tier: &mut [usize], rng: &mut R) {
    let mut keyed: Vec<(f64, usize)> = tier
        .iter()
        .map(|&i| {
            let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
            (u.ln() / f64::from(candidates[i].weight), i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (slot, (_, i)) in tier.iter_mut().zip(keyed) {
        *slot = i;
    }
}

/// Weighted rendezvous hashing: each candidate scores -w / ln(h) with h the
/// client's hash against the candidate mapped into (0, 1); highest first. A
/// client keeps its first choice while it stays, and only the clients whose
/// first choice joins or leaves move.
fn rendezvous(candidates: &[Candidate], tier: &mut [usize], client: u64) {
    let score = |i: usize| {
        let c = candidates[i];
        let h = xxh3_64_with_seed(&c.key.to_le_bytes(), client);
        let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // (0, 1)
        -f64::from(c.weight) / unit.ln()
    };
    tier.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
}

/// The hash of a client key (an address or subnet in wire bytes) for `hash`.
pub fn client_hash(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, 0x5167_6e70_6f73_7421)
}

/// The seed of the instance keys of `service` in `cluster`
/// ([`instance_key`]).
pub fn key_seed(service: &str, cluster: &str) -> u64 {
    let mut bytes = Vec::with_capacity(service.len() + cluster.len() + 2);
    for part in [service, cluster] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0);
    }
    xxh3_64_with_seed(&bytes, 0)
}

/// The stable key of an instance for rendezvous hashing: its id, hashed
/// with its service's seed ([`key_seed`]).
pub fn seeded_key(seed: u64, id: &str) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), seed)
}

/// The stable key of instance `id` of `service` in `cluster`.
pub fn instance_key(service: &str, cluster: &str, id: &str) -> u64 {
    seeded_key(key_seed(service, cluster), id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn cands(weights: &[(u16, u16)]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(n, &(priority, weight))| Candidate {
                priority,
                weight,
                key: instance_key("web", "dc1", &format!("i{n}")),
            })
            .collect()
    }

    /// Checks an observed count against a binomial expectation within 5
    /// standard deviations: fails by chance about once in 3.5 million.
    fn assert_binomial(observed: usize, trials: usize, p: f64, what: &str) {
        let n = trials as f64;
        let mean = n * p;
        let sd = (n * p * (1.0 - p)).sqrt();
        let dev = (observed as f64 - mean).abs();
        assert!(
            dev <= 5.0 * sd.max(1.0),
            "{what}: observed {observed}, expected {mean:.0} ± {:.0}",
            5.0 * sd
        );
    }

    fn first_place_counts(
        c: &[Candidate],
        policy: LbPolicy,
        trials: usize,
        seed: u64,
    ) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut out = vec![0; c.len()];
        let mut counts = vec![0; c.len()];
        for q in 0..trials {
            let ctx = QueryContext {
                rotation: q as u64,
                client: client_hash(&(q as u32).to_be_bytes()),
            };
            order(c, policy, ctx, &mut rng, &mut out);
            counts[out[0]] += 1;
        }
        counts
    }

    #[test]
    fn weighted_first_place_is_w_over_sum() {
        let c = cands(&[(10, 1), (10, 2), (10, 3), (10, 94)]);
        let trials = 200_000;
        let counts = first_place_counts(&c, LbPolicy::Weighted, trials, 7);
        for (i, &count) in counts.iter().enumerate() {
            assert_binomial(
                count,
                trials,
                f64::from(c[i].weight) / 100.0,
                &format!("instance {i}"),
            );
        }
    }

    #[test]
    fn weighted_second_place_follows_successive_draws() {
        // P(i second) = Σ_{j≠i} w_j/W · w_i/(W − w_j).
        let c = cands(&[(1, 10), (1, 30), (1, 60)]);
        let w: Vec<f64> = c.iter().map(|c| f64::from(c.weight)).collect();
        let total: f64 = w.iter().sum();
        let trials = 100_000;
        let mut rng = SmallRng::seed_from_u64(11);
        let mut out = vec![0; c.len()];
        let mut second = [0usize; 3];
        for _ in 0..trials {
            order(
                &c,
                LbPolicy::Weighted,
                QueryContext::default(),
                &mut rng,
                &mut out,
            );
            second[out[1]] += 1;
        }
        for i in 0..3 {
            let p: f64 = (0..3)
                .filter(|&j| j != i)
                .map(|j| w[j] / total * w[i] / (total - w[j]))
                .sum();
            assert_binomial(second[i], trials, p, &format!("instance {i} second"));
        }
    }

    #[test]
    fn large_tiers_keep_the_weighted_distribution() {
        let weights: Vec<(u16, u16)> = (0..100)
            .map(|n| (0, if n == 0 { 100 } else { 1 }))
            .collect();
        let c = cands(&weights);
        let trials = 50_000;
        let counts = first_place_counts(&c, LbPolicy::Weighted, trials, 3);
        assert_binomial(counts[0], trials, 100.0 / 199.0, "heavy instance");
        assert_binomial(counts[1], trials, 1.0 / 199.0, "light instance");
    }

    #[test]
    fn priority_tiers_come_first_whatever_the_policy() {
        let c = cands(&[(0, 1), (0, 1), (5, 65535), (9, 65535)]);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut out = vec![0; c.len()];
        for policy in [
            LbPolicy::Weighted,
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::Hash,
        ] {
            for q in 0..50 {
                let ctx = QueryContext {
                    rotation: q,
                    client: q,
                };
                order(&c, policy, ctx, &mut rng, &mut out);
                assert!(out[..2].contains(&0) && out[..2].contains(&1), "{policy:?}");
                assert_eq!(&out[2..], &[2, 3], "{policy:?}");
            }
        }
    }

    #[test]
    fn round_robin_rotates_by_one() {
        let c = cands(&[(0, 1), (0, 1), (0, 1)]);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut out = vec![0; c.len()];
        let mut firsts = Vec::new();
        for rotation in 0..6 {
            order(
                &c,
                LbPolicy::RoundRobin,
                QueryContext {
                    rotation,
                    client: 0,
                },
                &mut rng,
                &mut out,
            );
            firsts.push(out[0]);
        }
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_is_uniform() {
        let c = cands(&[(0, 1), (0, 50), (0, 1000), (0, 7)]);
        let trials = 40_000;
        let counts = first_place_counts(&c, LbPolicy::Random, trials, 5);
        for (i, &count) in counts.iter().enumerate() {
            assert_binomial(count, trials, 0.25, &format!("instance {i}"));
        }
    }

    #[test]
    fn hash_is_sticky_weighted_and_moves_few_clients() {
        let c = cands(&[(0, 100), (0, 100), (0, 200), (0, 100)]);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut out = Vec::new();
        let clients = 20_000u32;
        let first = |c: &[Candidate], client: u32, rng: &mut SmallRng, out: &mut Vec<usize>| {
            let ctx = QueryContext {
                rotation: 0,
                client: client_hash(&client.to_be_bytes()),
            };
            out.resize(c.len(), 0);
            order(c, LbPolicy::Hash, ctx, rng, out);
            out[0]
        };
        let before: Vec<usize> = (0..clients)
            .map(|n| first(&c, n, &mut rng, &mut out))
            .collect();
        // Sticky: asking again gives the same first instance.
        for n in (0..clients).step_by(97) {
            assert_eq!(first(&c, n, &mut rng, &mut out), before[n as usize]);
        }
        // Weighted: the weight-200 instance is first for 2/5 of clients.
        let heavy = before.iter().filter(|&&i| i == 2).count();
        assert_binomial(heavy, clients as usize, 0.4, "heavy instance");
        // Adding a fifth instance (weight 100, so 1/6 of the total) moves only
        // the clients that now pick it, about 1/6 of them, and no others.
        let mut grown = c.clone();
        grown.push(Candidate {
            priority: 0,
            weight: 100,
            key: instance_key("web", "dc1", "new"),
        });
        let mut moved = 0;
        for n in 0..clients {
            let now = first(&grown, n, &mut rng, &mut out);
            if now != before[n as usize] {
                assert_eq!(now, 4, "client {n} moved between old instances");
                moved += 1;
            }
        }
        assert_binomial(moved, clients as usize, 1.0 / 6.0, "moved clients");
    }
}
