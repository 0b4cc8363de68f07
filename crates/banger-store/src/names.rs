//! Readable names for VMs created without one: `adjective-noun`, like `brave-otter`. Short,
//! lower-case words only, so every name is a valid DNS label (it becomes the guest hostname)
//! and easy to type in `banger vm ssh NAME`.

use rand::Rng;
use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brave", "brisk", "calm", "clever", "cosy", "crisp", "daring", "eager",
    "fancy", "fond", "gentle", "glad", "grand", "happy", "hardy", "jolly", "keen", "kind",
    "lively", "lucky", "merry", "mighty", "nimble", "noble", "plucky", "proud", "quick", "quiet",
    "rapid", "shiny", "silent", "snug", "steady", "sunny", "swift", "tidy", "vivid", "witty",
];

const NOUNS: &[&str] = &[
    "badger", "beaver", "bison", "crane", "dingo", "eagle", "falcon", "ferret", "finch", "gecko",
    "heron", "ibis", "koala", "lemur", "lynx", "marten", "moose", "newt", "ocelot", "orca",
    "otter", "owl", "panda", "puffin", "quail", "raven", "robin", "salmon", "seal", "stoat",
    "swan", "tapir", "toucan", "trout", "vole", "walrus", "weasel", "wombat", "wren", "yak",
];

/// A random `adjective-noun` name.
pub(crate) fn random_name(rng: &mut impl Rng) -> String {
    let adjective = ADJECTIVES.choose(rng).copied().unwrap_or("quick");
    let noun = NOUNS.choose(rng).copied().unwrap_or("otter");
    format!("{adjective}-{noun}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_name_is_a_valid_vm_name() {
        for adjective in ADJECTIVES {
            for noun in NOUNS {
                let name = format!("{adjective}-{noun}");
                // Leave room for the numeric suffix added after collisions.
                assert!(name.len() <= 50, "{name}");
                banger_api::validate::name("VM", &name).unwrap();
            }
        }
        let mut rng = rand::rng();
        let name = random_name(&mut rng);
        assert!(banger_api::validate::name("VM", &name).is_ok(), "{name}");
    }

    #[test]
    fn word_lists_have_no_duplicates() {
        for list in [ADJECTIVES, NOUNS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len());
        }
    }
}
