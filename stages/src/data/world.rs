//! The built-in task's text world: short movie reviews from a template grammar over a
//! vocabulary with sentiment words, and the ground-truth reward `r*`.
//!
//! # The reward
//!
//! [`World::reward`]`(prompt, response)` depends on the response only (the prompt is in
//! the signature so that every judge has the same interface):
//!
//! 1. The response is lowercased and split into words: maximal runs of alphabetic
//!    characters and apostrophes (`"Great, great!"` → `great`, `great`).
//! 2. Walking the words in order, the first occurrence of a word adds its weight
//!    (`weights[word]`, 0 for a word not in `weights`); each later occurrence of a word
//!    already seen subtracts `repeat_penalty`, unless the word is one of
//!    `function_words` (the literal words of the templates: `the`, `was`, ..., and `an`),
//!    whose repeats cost nothing.
//!
//! So `r*("", "a great great film")` = w(great) − repeat_penalty, and degenerate
//! repetition never pays: repeating a word costs instead of adding its weight again.
//!
//! # The world
//!
//! Sentiment words (positive and negative adjectives and verbs) get weights drawn from the
//! seed: positive words `U[weight_min, weight_max]`, negative words the negative of such
//! a draw, rounded to 3 decimals (so the JSON file holds them exactly); every other word
//! weighs 0. A review has a polarity; each sentiment slot of a
//! template takes a word of that polarity with probability `consistency`, of the opposite
//! polarity with probability `opposite`, and a neutral word otherwise.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::Path,
};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{io::DataError, rng_for};

/// The `format` tag of a world file.
pub const WORLD_FORMAT: &str = "dagrun-toy-world-v1";

/// Parameters of a world (the `world` param of the `toy_task` kind).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WorldParams {
    /// Smallest absolute weight of a sentiment word. Default 0.5.
    pub weight_min: f64,
    /// Largest absolute weight of a sentiment word. Default 2.0.
    pub weight_max: f64,
    /// What each repeated occurrence of a (non-function) word subtracts. Default 0.5.
    pub repeat_penalty: f64,
    /// Probability that a sentiment slot takes the review's polarity. Default 0.75.
    pub consistency: f64,
    /// Probability that it takes the opposite polarity (else: a neutral word). Default 0.15.
    pub opposite: f64,
    /// Fewest sentences of a review. Default 6.
    pub min_sentences: usize,
    /// Most sentences of a review. Default 12.
    pub max_sentences: usize,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            weight_min: 0.5,
            weight_max: 2.0,
            repeat_penalty: 0.5,
            consistency: 0.75,
            opposite: 0.15,
            min_sentences: 6,
            max_sentences: 12,
        }
    }
}

impl WorldParams {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let finite = |v: f64| v.is_finite();
        if !(finite(self.weight_min) && self.weight_min >= 0.0) {
            return Err(("weight_min", "must be a finite number ≥ 0".into()));
        }
        if !(finite(self.weight_max) && self.weight_max >= self.weight_min) {
            return Err(("weight_max", "must be finite and ≥ weight_min".into()));
        }
        if !(finite(self.repeat_penalty) && self.repeat_penalty >= 0.0) {
            return Err(("repeat_penalty", "must be a finite number ≥ 0".into()));
        }
        if !(0.0..=1.0).contains(&self.consistency) {
            return Err(("consistency", "must be in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&self.opposite) || self.consistency + self.opposite > 1.0 {
            return Err(("opposite", "must be in [0, 1 − consistency]".into()));
        }
        if self.min_sentences == 0 {
            return Err(("min_sentences", "must be at least 1".into()));
        }
        if self.max_sentences < self.min_sentences {
            return Err(("max_sentences", "must be ≥ min_sentences".into()));
        }
        Ok(())
    }
}

/// The word lists of the grammar, by slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lexicon {
    pub positive_adjectives: Vec<String>,
    pub negative_adjectives: Vec<String>,
    pub neutral_adjectives: Vec<String>,
    pub positive_verbs: Vec<String>,
    pub negative_verbs: Vec<String>,
    pub neutral_verbs: Vec<String>,
    pub nouns: Vec<String>,
    pub names: Vec<String>,
    pub adverbs: Vec<String>,
}

/// The reward's parameters and its definition in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    pub repeat_penalty: f64,
    pub definition: String,
}

/// How reviews are generated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    pub consistency: f64,
    pub opposite: f64,
    pub min_sentences: usize,
    pub max_sentences: usize,
}

/// A generated world: vocabulary, weights, grammar and reward. Serialised as the
/// `toy_task` kind's `world` output; [`World::load`] reads it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// [`WORLD_FORMAT`].
    pub format: String,
    pub seed: u64,
    pub reward: RewardSpec,
    /// Weight of every sentiment word; other words weigh 0.
    pub weights: BTreeMap<String, f64>,
    /// Words whose repeats are not penalised (the templates' literal words, and `an`,
    /// which replaces `a` before a vowel).
    pub function_words: BTreeSet<String>,
    pub lexicon: Lexicon,
    /// Sentence templates; slots: `{adj}` and `{verb}` (sentiment), `{nadj}` (neutral
    /// adjective), `{noun}`, `{name}`, `{adv}`.
    pub templates: Vec<String>,
    pub generator: GeneratorSpec,
}

const REWARD_DEFINITION: &str = "r*(prompt, response): lowercase the response and split it \
into words (maximal runs of letters and apostrophes); the first occurrence of each word adds \
weights[word] (0 if absent); each later occurrence of a word already seen subtracts \
repeat_penalty unless the word is in function_words. The prompt is not used.";

fn list(words: &str) -> Vec<String> {
    words.split_whitespace().map(str::to_string).collect()
}

fn default_lexicon() -> Lexicon {
    Lexicon {
        positive_adjectives: list(
            "good great wonderful brilliant superb excellent delightful charming moving \
             beautiful gripping clever funny touching stunning fantastic masterful engaging \
             memorable powerful fresh lovely witty thrilling inspired elegant joyful heartfelt \
             remarkable sublime",
        ),
        negative_adjectives: list(
            "bad awful terrible boring dull weak clumsy tedious painful bland silly messy \
             poor dreadful lazy forgettable shallow annoying predictable pointless stale flat \
             cheap horrible confusing slow lifeless awkward mediocre ugly",
        ),
        neutral_adjectives: list(
            "long short new old typical quiet loud french early modern black small",
        ),
        positive_verbs: list("loved enjoyed adored admired cherished praised relished treasured"),
        negative_verbs: list("hated disliked loathed regretted endured despised resented dreaded"),
        neutral_verbs: list("saw noticed described remembered discussed reviewed rented streamed"),
        nouns: list(
            "movie film plot story script cast acting ending soundtrack director dialogue scene \
             camera pacing score villain hero sequel premise finale editing lighting effects \
             costume character twist opening setting performance screenplay",
        ),
        names: list("anna marco lena tom priya omar julia ken sofia david"),
        adverbs: list("really very quite rather truly fairly simply so"),
    }
}

fn default_templates() -> Vec<String> {
    [
        "the {noun} was {adv} {adj}.",
        "i {verb} the {noun}.",
        "it is a {adj} {noun}.",
        "{name} was {adj} as the {noun}.",
        "the {noun} and the {noun} were {adj}.",
        "overall a {adj} {noun}, {adv} {adj}.",
        "this {noun} felt {adj}.",
        "honestly, i {verb} this {noun}.",
        "the {noun} is {adj} but the {noun} is {adj}.",
        "we watched it and it was {adj}.",
        "{name} {verb} the {nadj} {noun}.",
        "my friends {verb} the {noun}.",
        "the {nadj} {noun} seemed {adj} to me.",
        "in the end the {noun} was {adj}.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The words of `text` as the reward sees them: lowercased maximal runs of letters and
/// apostrophes.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphabetic() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

impl World {
    /// Generates the world of `seed`.
    pub fn generate(seed: u64, p: &WorldParams) -> World {
        let lexicon = default_lexicon();
        let templates = default_templates();
        let mut rng = rng_for(seed, "world:weights");
        let mut weights = BTreeMap::new();
        // Rounded to 3 decimals, so the JSON file holds the exact values.
        let draw = |rng: &mut ChaCha8Rng| {
            let w = p.weight_min + (p.weight_max - p.weight_min) * rng.random::<f64>();
            (w * 1000.0).round() / 1000.0
        };
        for w in lexicon
            .positive_adjectives
            .iter()
            .chain(&lexicon.positive_verbs)
        {
            weights.insert(w.clone(), draw(&mut rng));
        }
        for w in lexicon
            .negative_adjectives
            .iter()
            .chain(&lexicon.negative_verbs)
        {
            weights.insert(w.clone(), -draw(&mut rng));
        }
        let function_words = templates
            .iter()
            .flat_map(|t| {
                let mut s = t.clone();
                for slot in ["{adj}", "{verb}", "{nadj}", "{noun}", "{name}", "{adv}"] {
                    s = s.replace(slot, " ");
                }
                words(&s)
            })
            .chain(["an".to_string()])
            .collect();
        World {
            format: WORLD_FORMAT.to_string(),
            seed,
            reward: RewardSpec {
                repeat_penalty: p.repeat_penalty,
                definition: REWARD_DEFINITION.to_string(),
            },
            weights,
            function_words,
            lexicon,
            templates,
            generator: GeneratorSpec {
                consistency: p.consistency,
                opposite: p.opposite,
                min_sentences: p.min_sentences,
                max_sentences: p.max_sentences,
            },
        }
    }

    /// Reads a world file written by the `toy_task` kind.
    pub fn load(path: &Path) -> Result<World, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_err = |message: String| DataError::File {
            path: path.to_path_buf(),
            message,
        };
        let w: World = serde_json::from_slice(&bytes)
            .map_err(|e| file_err(format!("not a toy-task world: {e}")))?;
        if w.format != WORLD_FORMAT {
            return Err(file_err(format!(
                "world format `{}`, expected `{WORLD_FORMAT}`",
                w.format
            )));
        }
        Ok(w)
    }

    /// Writes the world as pretty JSON.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::files::write_json(path, self)
    }

    /// The ground-truth reward `r*(prompt, response)` (see the module documentation).
    pub fn reward(&self, _prompt: &str, response: &str) -> f64 {
        let mut seen = HashSet::new();
        let mut r = 0.0;
        for w in words(response) {
            if seen.contains(&w) {
                if !self.function_words.contains(&w) {
                    r -= self.reward.repeat_penalty;
                }
            } else {
                r += self.weights.get(&w).copied().unwrap_or(0.0);
                seen.insert(w);
            }
        }
        r
    }

    fn pick<'a>(rng: &mut ChaCha8Rng, words: &'a [String]) -> &'a str {
        &words[rng.random_range(0..words.len())]
    }

    /// A sentiment slot's word: of the review's polarity, the opposite one, or neutral.
    fn sentiment_word<'a>(
        &'a self,
        rng: &mut ChaCha8Rng,
        positive: bool,
        pos: &'a [String],
        neg: &'a [String],
        neutral: &'a [String],
    ) -> &'a str {
        let u: f64 = rng.random();
        let g = &self.generator;
        let same = if positive { pos } else { neg };
        let other = if positive { neg } else { pos };
        if u < g.consistency {
            Self::pick(rng, same)
        } else if u < g.consistency + g.opposite {
            Self::pick(rng, other)
        } else {
            Self::pick(rng, neutral)
        }
    }

    /// One sentence of a review of the given polarity.
    pub fn sentence(&self, rng: &mut ChaCha8Rng, positive: bool) -> String {
        let lx = &self.lexicon;
        let template = Self::pick(rng, &self.templates).to_string();
        let mut out = String::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = start
                + rest[start..]
                    .find('}')
                    .expect("templates close their slots");
            let word = match &rest[start + 1..end] {
                "adj" => self.sentiment_word(
                    rng,
                    positive,
                    &lx.positive_adjectives,
                    &lx.negative_adjectives,
                    &lx.neutral_adjectives,
                ),
                "verb" => self.sentiment_word(
                    rng,
                    positive,
                    &lx.positive_verbs,
                    &lx.negative_verbs,
                    &lx.neutral_verbs,
                ),
                "nadj" => Self::pick(rng, &lx.neutral_adjectives),
                "noun" => Self::pick(rng, &lx.nouns),
                "name" => Self::pick(rng, &lx.names),
                "adv" => Self::pick(rng, &lx.adverbs),
                other => unreachable!("unknown template slot {other}"),
            };
            if word.starts_with(['a', 'e', 'i', 'o', 'u']) && (out == "a " || out.ends_with(" a "))
            {
                out.insert(out.len() - 1, 'n');
            }
            out.push_str(word);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A review of the given polarity: `min_sentences..=max_sentences` sentences.
    pub fn review(&self, rng: &mut ChaCha8Rng, positive: bool) -> String {
        let g = &self.generator;
        let n = rng.random_range(g.min_sentences..=g.max_sentences);
        (0..n)
            .map(|_| self.sentence(rng, positive))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The whitespace-separated words of a fresh review of random polarity, at least
    /// `min_words` of them (sentences are added as needed).
    pub fn review_words(&self, rng: &mut ChaCha8Rng, min_words: usize) -> Vec<String> {
        let positive = rng.random_bool(0.5);
        let mut words: Vec<String> = list(&self.review(rng, positive));
        while words.len() < min_words {
            words.extend(list(&self.sentence(rng, positive)));
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::generate(7, &WorldParams::default())
    }

    #[test]
    fn reward_hand_checked() {
        let w = world();
        let great = w.weights["great"];
        let awful = w.weights["awful"];
        let loved = w.weights["loved"];
        assert!((0.5..=2.0).contains(&great) && (-2.0..=-0.5).contains(&awful));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(w.reward("p", "a great film"), great));
        assert!(close(w.reward("", "Great, great!"), great - 0.5));
        assert!(close(w.reward("", "great great great"), great - 1.0));
        assert!(close(
            w.reward("", "i loved it but the plot was awful."),
            loved + awful
        ));
        // `the` is a function word: repeating it costs nothing; `movie` is not.
        assert!(close(w.reward("", "the movie the the"), 0.0));
        assert!(close(w.reward("", "movie movie"), -0.5));
        // Unknown words and punctuation weigh nothing; the prompt is ignored.
        assert!(close(w.reward("awful awful", "zebra 123 !!"), 0.0));
        assert!(close(w.reward("", ""), 0.0));
    }

    #[test]
    fn same_seed_same_world_other_seed_other_weights() {
        assert_eq!(world(), world());
        let other = World::generate(8, &WorldParams::default());
        assert_ne!(world().weights, other.weights);
        assert_eq!(world().lexicon, other.lexicon);
        let mut a = rng_for(1, "t");
        let mut b = rng_for(1, "t");
        assert_eq!(world().review(&mut a, true), world().review(&mut b, true));
    }

    #[test]
    fn lexicon_lists_are_disjoint_and_function_words_carry_no_weight() {
        let w = world();
        let lx = &w.lexicon;
        let all: Vec<&String> = [
            &lx.positive_adjectives,
            &lx.negative_adjectives,
            &lx.neutral_adjectives,
            &lx.positive_verbs,
            &lx.negative_verbs,
            &lx.neutral_verbs,
            &lx.nouns,
            &lx.names,
            &lx.adverbs,
        ]
        .into_iter()
        .flatten()
        .chain(&w.function_words)
        .collect();
        let unique: HashSet<&String> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a word is in two lists");
        assert!(w.function_words.contains("the") && w.function_words.contains("watched"));
        assert_eq!(w.weights.len(), 30 + 30 + 8 + 8);
    }

    #[test]
    fn reviews_follow_their_polarity() {
        let w = world();
        let mut rng = rng_for(3, "reviews");
        let mean = |positive: bool, rng: &mut ChaCha8Rng| {
            let sum: f64 = (0..200)
                .map(|_| {
                    let text = w.review(rng, positive);
                    words(&text)
                        .iter()
                        .map(|x| w.weights.get(x).copied().unwrap_or(0.0))
                        .sum::<f64>()
                })
                .sum();
            sum / 200.0
        };
        assert!(mean(true, &mut rng) > 2.0);
        assert!(mean(false, &mut rng) < -2.0);
        let text = w.review(&mut rng, true);
        let n = text.matches('.').count();
        assert!((6..=12).contains(&n), "{n} sentences: {text}");
        assert!(!text.contains('{'));
        for _ in 0..300 {
            let s = w.sentence(&mut rng, false);
            for v in ["a a", "a e", "a i", "a o", "a u"] {
                assert!(!s.starts_with(v) && !s.contains(&format!(" {v}")), "{s}");
            }
        }
    }

    #[test]
    fn load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("world.json");
        world().save(&p).unwrap();
        assert_eq!(World::load(&p).unwrap(), world());
        std::fs::write(&p, "{\"format\": 1}").unwrap();
        let e = World::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a toy-task world"), "{e}");
        let mut w = serde_json::to_value(world()).unwrap();
        w["format"] = "other".into();
        std::fs::write(&p, w.to_string()).unwrap();
        assert!(World::load(&p)
            .unwrap_err()
            .to_string()
            .contains("expected `dagrun-toy-world-v1`"));
    }

    #[test]
    fn params_validation_names_fields() {
        let bad = WorldParams {
            consistency: 0.9,
            opposite: 0.2,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "opposite");
        let bad = WorldParams {
            max_sentences: 2,
            min_sentences: 3,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "max_sentences");
        assert!(WorldParams::default().validate().is_ok());
    }
}
