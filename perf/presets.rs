//! Named workload sizes, so that results quoted as "medium" mean the same
//! fleet everywhere. Every field can still be overridden on the command line.

use clap::ValueEnum;
use serde::Serialize;

/// A named workload size (see the README for the reasoning behind each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 10 nodes x 10 topics over 20 topics x 2 channels: a smoke test.
    Small,
    /// 100 nodes x 1,000 topics over 10,000 topics x 4 channels.
    Medium,
    /// 500 nodes x 10,000 topics over 20,000 topics x 4 channels.
    Large,
    /// 5,000 nodes x 20 topics over 10,000 topics x 2 channels: many
    /// connections with few topics each, the `soak` mode's default.
    Soak,
}

/// The fleet shape a preset stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub nodes: usize,
    pub topics_per_node: usize,
    pub topic_universe: usize,
    pub channels: usize,
}

impl Preset {
    /// The fleet shape of this preset.
    pub fn shape(self) -> Shape {
        match self {
            Preset::Small => Shape {
                nodes: 10,
                topics_per_node: 10,
                topic_universe: 20,
                channels: 2,
            },
            Preset::Medium => Shape {
                nodes: 100,
                topics_per_node: 1_000,
                topic_universe: 10_000,
                channels: 4,
            },
            Preset::Large => Shape {
                nodes: 500,
                topics_per_node: 10_000,
                topic_universe: 20_000,
                channels: 4,
            },
            Preset::Soak => Shape {
                nodes: 5_000,
                topics_per_node: 20,
                topic_universe: 10_000,
                channels: 2,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_issue() {
        let m = Preset::Medium.shape();
        assert_eq!(
            (m.nodes, m.topics_per_node, m.topic_universe, m.channels),
            (100, 1_000, 10_000, 4)
        );
        let l = Preset::Large.shape();
        assert_eq!(
            (l.nodes, l.topics_per_node, l.topic_universe, l.channels),
            (500, 10_000, 20_000, 4)
        );
        let s = Preset::Small.shape();
        assert_eq!((s.nodes, s.topics_per_node), (10, 10));
    }
}
