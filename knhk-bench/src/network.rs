//! The simulated network: latency per link, regions, loss, partitions.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How long a frame takes on one link, one way.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LatencyModel {
    /// Always `ms` milliseconds.
    Constant {
        /// One-way delay.
        ms: f64,
    },
    /// Uniform between `min_ms` and `max_ms`.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Pareto (heavy-tailed): `scale_ms` is the minimum, `shape` the tail index (smaller
    /// is heavier; 1.5–3 is typical of real networks). Capped at 100 × `scale_ms`.
    Pareto {
        /// Minimum delay.
        scale_ms: f64,
        /// Tail index.
        shape: f64,
    },
}

impl LatencyModel {
    /// One draw, in microseconds (at least 1).
    pub fn sample_us(&self, rng: &mut ChaCha8Rng) -> u64 {
        let ms = match *self {
            Self::Constant { ms } => ms,
            Self::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    rng.random_range(min_ms..max_ms)
                } else {
                    min_ms
                }
            }
            Self::Pareto { scale_ms, shape } => {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                (scale_ms / u.powf(1.0 / shape.max(0.1))).min(scale_ms * 100.0)
            }
        };
        (ms * 1_000.0).max(1.0) as u64
    }

    /// Parses `constant:MS`, `uniform:MIN:MAX` or `pareto:SCALE:SHAPE`.
    ///
    /// Errors: a message naming the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        let model = match parts.as_slice() {
            ["constant", ms] => number(ms).map(|ms| Self::Constant { ms }),
            ["uniform", a, b] => number(a)
                .zip(number(b))
                .filter(|(a, b)| a <= b)
                .map(|(min_ms, max_ms)| Self::Uniform { min_ms, max_ms }),
            ["pareto", scale, shape] => number(scale)
                .zip(number(shape))
                .filter(|(_, shape)| *shape > 0.0)
                .map(|(scale_ms, shape)| Self::Pareto { scale_ms, shape }),
            _ => None,
        };
        model.ok_or_else(|| {
            format!(
                "invalid latency {text:?}: use constant:MS, uniform:MIN:MAX or pareto:SCALE:SHAPE"
            )
        })
    }
}

/// The command-line form that [`LatencyModel::parse`] reads: `constant:MS`,
/// `uniform:MIN:MAX` or `pareto:SCALE:SHAPE`.
impl std::fmt::Display for LatencyModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Constant { ms } => write!(f, "constant:{ms}"),
            Self::Uniform { min_ms, max_ms } => write!(f, "uniform:{min_ms}:{max_ms}"),
            Self::Pareto { scale_ms, shape } => write!(f, "pareto:{scale_ms}:{shape}"),
        }
    }
}

/// Regions and the round-trip time between each pair. A frame between regions takes half
/// the pair's round trip plus the link model's draw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionMatrix {
    /// Region names.
    pub names: Vec<String>,
    /// `rtt_ms[a][b]`: round trip between regions `a` and `b` (symmetric).
    pub rtt_ms: Vec<Vec<f64>>,
}

impl RegionMatrix {
    /// us-east, eu-west and ap-southeast, with typical public-cloud round trips.
    pub fn three_regions() -> Self {
        Self {
            names: vec!["us-east".into(), "eu-west".into(), "ap-southeast".into()],
            rtt_ms: vec![
                vec![1.0, 75.0, 215.0],
                vec![75.0, 1.0, 160.0],
                vec![215.0, 160.0, 1.0],
            ],
        }
    }

    /// One-way base delay between two regions, in microseconds.
    pub fn one_way_us(&self, from: usize, to: usize) -> u64 {
        let rtt = self
            .rtt_ms
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .unwrap_or(0.0);
        (rtt * 500.0) as u64
    }
}

/// Groups that cannot reach each other between two virtual times.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Partition {
    /// `group[i]` is node `i`'s side; frames between different sides are lost.
    pub group: Vec<u8>,
    /// Virtual ms (since the start) when the partition begins.
    pub from_ms: u64,
    /// Virtual ms when it heals.
    pub until_ms: u64,
}

impl Partition {
    /// True if a frame from `a` to `b` at virtual time `at_ms` is cut off.
    pub fn separates(&self, a: usize, b: usize, at_ms: u64) -> bool {
        (self.from_ms..self.until_ms).contains(&at_ms) && self.group.get(a) != self.group.get(b)
    }
}

/// Everything about the network.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkConfig {
    /// Per-link delay.
    pub latency: LatencyModel,
    /// Regions (nodes are assigned round-robin), or none for a single site.
    pub regions: Option<RegionMatrix>,
    /// Probability that a frame is lost, in [0, 1).
    pub loss: f64,
    /// Partitions, in any order.
    pub partitions: Vec<Partition>,
    /// Slow nodes (Lifeguard's experiment): every frame to or from one of these waits
    /// an extra uniform draw in `[0, slow_extra_ms]`, as if the node processed its
    /// messages late.
    pub slow_nodes: Vec<usize>,
    /// The most extra delay of a slow node's frames, in ms.
    pub slow_extra_ms: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            latency: LatencyModel::Constant { ms: 1.0 },
            regions: None,
            loss: 0.0,
            partitions: Vec::new(),
            slow_nodes: Vec::new(),
            slow_extra_ms: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latency_forms_parse_and_bad_ones_explain() {
        assert_eq!(
            LatencyModel::parse("constant:5"),
            Ok(LatencyModel::Constant { ms: 5.0 })
        );
        assert!(matches!(
            LatencyModel::parse("uniform:1:20"),
            Ok(LatencyModel::Uniform { .. })
        ));
        assert!(matches!(
            LatencyModel::parse("pareto:2:1.5"),
            Ok(LatencyModel::Pareto { .. })
        ));
        for bad in [
            "",
            "constant",
            "uniform:5:1",
            "pareto:1:0",
            "constant:-1",
            "gauss:1",
        ] {
            assert!(LatencyModel::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latency_displays_in_the_form_it_parses_from() {
        for text in [
            "constant:1",
            "constant:0.25",
            "uniform:1:20",
            "pareto:2:1.5",
        ] {
            let model = LatencyModel::parse(text);
            assert_eq!(model.as_ref().map(ToString::to_string).as_deref(), Ok(text));
        }
    }

    #[test]
    fn draws_stay_in_range_and_pareto_has_a_tail() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let uniform = LatencyModel::Uniform {
            min_ms: 2.0,
            max_ms: 4.0,
        };
        assert!((0..1_000).all(|_| (2_000..4_000).contains(&uniform.sample_us(&mut rng))));
        let pareto = LatencyModel::Pareto {
            scale_ms: 1.0,
            shape: 1.5,
        };
        let draws: Vec<u64> = (0..10_000).map(|_| pareto.sample_us(&mut rng)).collect();
        assert!(draws.iter().all(|&d| (1_000..=100_000).contains(&d)));
        assert!(
            draws.iter().any(|&d| d > 10_000),
            "a heavy tail reaches 10× the minimum"
        );
    }

    #[test]
    fn partitions_cut_only_across_groups_and_only_in_their_window() {
        let partition = Partition {
            group: vec![0, 0, 1],
            from_ms: 100,
            until_ms: 200,
        };
        assert!(partition.separates(0, 2, 150));
        assert!(!partition.separates(0, 1, 150));
        assert!(!partition.separates(0, 2, 99) && !partition.separates(0, 2, 200));
    }

    #[test]
    fn region_delays_are_half_the_round_trip() {
        let regions = RegionMatrix::three_regions();
        assert_eq!(regions.one_way_us(0, 1), 37_500);
        assert_eq!(regions.one_way_us(2, 2), 500);
    }
}
