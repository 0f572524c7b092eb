//! [`Coordinate`]: Vivaldi network coordinates with height (Dabek et al., 2004, as serf
//! runs them), so a node can estimate its round trip to any peer it has a coordinate
//! of, not only to peers it has probed.

use serde::{Deserialize, Serialize};

/// Dimensions of the Euclidean part (serf uses 8).
pub const DIMENSIONS: usize = 8;

/// Settings of the Vivaldi update (serf's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VivaldiConfig {
    /// The error a new coordinate starts with, and the most it may reach. Default 1.5.
    pub error_max: f64,
    /// How fast the error estimate moves (`c_e`). Default 0.25.
    pub error_gain: f64,
    /// How fast the coordinate moves (`c_c`). Default 0.25.
    pub position_gain: f64,
    /// The least height, in seconds (a node's access-link latency). Default 10 µs.
    pub height_min: f64,
}

impl Default for VivaldiConfig {
    fn default() -> Self {
        Self {
            error_max: 1.5,
            error_gain: 0.25,
            position_gain: 0.25,
            height_min: 10.0e-6,
        }
    }
}

/// A point in Vivaldi space: a Euclidean position plus a height (the latency of the
/// node's own link, which every path to it pays), with the node's confidence in it.
/// Distances are in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// Position, in seconds.
    pub position: [f64; DIMENSIONS],
    /// Height, in seconds.
    pub height: f64,
    /// Relative error estimate (0: certain).
    pub error: f64,
}

impl Coordinate {
    /// A node's starting coordinate: the origin, least height, largest error.
    pub fn origin(config: &VivaldiConfig) -> Self {
        Self {
            position: [0.0; DIMENSIONS],
            height: config.height_min,
            error: config.error_max,
        }
    }

    /// True if every component is a finite number and height and error are
    /// non-negative: what a coordinate received from a peer must be before use.
    pub fn is_valid(&self) -> bool {
        self.position.iter().all(|x| x.is_finite())
            && self.height.is_finite()
            && self.height >= 0.0
            && self.error.is_finite()
            && self.error >= 0.0
    }

    /// The estimated round trip to `other`, in seconds: the Euclidean distance plus
    /// both heights.
    pub fn distance_to(&self, other: &Coordinate) -> f64 {
        euclidean(&self.position, &other.position) + self.height + other.height
    }

    /// Moves this coordinate after measuring `rtt_seconds` to a peer at `other`
    /// (serf's update). A measurement that is not a positive finite number, or a peer
    /// coordinate that is not [`Coordinate::is_valid`], changes nothing and returns
    /// false.
    pub fn update(&mut self, config: &VivaldiConfig, other: &Coordinate, rtt_seconds: f64) -> bool {
        if !(rtt_seconds.is_finite() && rtt_seconds > 0.0 && other.is_valid()) {
            return false;
        }
        let distance = self.distance_to(other);
        let wrongness = (distance - rtt_seconds).abs() / rtt_seconds;
        let total_error = self.error + other.error;
        let weight = if total_error > 0.0 {
            self.error / total_error
        } else {
            0.5
        };
        self.error = (config.error_gain * weight * wrongness
            + self.error * (1.0 - config.error_gain * weight))
            .min(config.error_max);
        let force = config.position_gain * weight * (rtt_seconds - distance);
        self.apply_force(config, force, other);
        true
    }

    /// Pushes this coordinate `force` seconds away from `other` (toward it if
    /// negative), and its height in proportion.
    fn apply_force(&mut self, config: &VivaldiConfig, force: f64, other: &Coordinate) {
        let (unit, magnitude) = unit_vector_from(&other.position, &self.position);
        for (x, u) in self.position.iter_mut().zip(unit) {
            *x += u * force;
        }
        if magnitude > ZERO {
            self.height = ((self.height + other.height) * force / magnitude + self.height)
                .max(config.height_min);
        }
    }
}

/// Below this, two positions are the same point.
const ZERO: f64 = 1.0e-6;

fn euclidean(a: &[f64; DIMENSIONS], b: &[f64; DIMENSIONS]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// The unit vector from `from` to `to` and the distance between them. Two points that
/// coincide get a fixed direction derived from their coordinates' bits (serf picks a
/// random one; a fixed one keeps the update deterministic), so two nodes starting at
/// the origin still push apart.
fn unit_vector_from(from: &[f64; DIMENSIONS], to: &[f64; DIMENSIONS]) -> ([f64; DIMENSIONS], f64) {
    let mut difference = [0.0; DIMENSIONS];
    for (d, (a, b)) in difference.iter_mut().zip(to.iter().zip(from)) {
        *d = a - b;
    }
    let magnitude = difference.iter().map(|x| x * x).sum::<f64>().sqrt();
    if magnitude > ZERO {
        return (difference.map(|x| x / magnitude), magnitude);
    }
    let mut direction = [0.0; DIMENSIONS];
    direction[0] = 1.0;
    (direction, 0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(x: f64) -> Coordinate {
        let mut position = [0.0; DIMENSIONS];
        position[0] = x;
        Coordinate {
            position,
            height: 0.0,
            error: 1.0,
        }
    }

    #[test]
    fn distance_is_euclidean_plus_both_heights() {
        let mut a = at(0.0);
        let mut b = at(0.0);
        b.position[1] = 0.3;
        b.position[0] = 0.4;
        a.height = 0.01;
        b.height = 0.02;
        assert!((a.distance_to(&b) - 0.53).abs() < 1e-12);
    }

    #[test]
    fn one_update_matches_the_hand_computed_step() {
        // a at 0, b at 0.1 s, both error 1, no height; measured rtt 0.2 s.
        // weight = 0.5; distance 0.1; wrongness = |0.1 - 0.2| / 0.2 = 0.5;
        // error = 0.25*0.5*0.5 + 1*(1 - 0.125) = 0.9375;
        // force = 0.25*0.5*(0.2 - 0.1) = 0.0125, away from b: x = -0.0125.
        let config = VivaldiConfig {
            height_min: 0.0,
            ..VivaldiConfig::default()
        };
        let mut a = at(0.0);
        let b = at(0.1);
        assert!(a.update(&config, &b, 0.2));
        assert!((a.error - 0.9375).abs() < 1e-12);
        assert!((a.position[0] + 0.0125).abs() < 1e-12);
        // Height: (0 + 0) * force / 0.1 + 0 = 0.
        assert_eq!(a.height, 0.0);
    }

    #[test]
    fn bad_measurements_and_bad_peers_change_nothing() {
        let config = VivaldiConfig::default();
        let mut a = Coordinate::origin(&config);
        let before = a;
        let good = at(0.1);
        assert!(!a.update(&config, &good, 0.0));
        assert!(!a.update(&config, &good, f64::NAN));
        let mut bad = good;
        bad.position[3] = f64::INFINITY;
        assert!(!a.update(&config, &bad, 0.1));
        bad = good;
        bad.height = -1.0;
        assert!(!a.update(&config, &bad, 0.1));
        assert_eq!(a, before);
    }

    #[test]
    fn nodes_starting_together_learn_their_distance() {
        // Two nodes 50 ms apart, both starting at the origin.
        let config = VivaldiConfig::default();
        let (mut a, mut b) = (Coordinate::origin(&config), Coordinate::origin(&config));
        for _ in 0..200 {
            let seen_b = b;
            a.update(&config, &seen_b, 0.050);
            let seen_a = a;
            b.update(&config, &seen_a, 0.050);
        }
        let estimate = a.distance_to(&b);
        assert!((estimate - 0.050).abs() < 0.005, "estimate {estimate}");
        assert!(a.error < 0.5, "error {}", a.error);
    }
}
