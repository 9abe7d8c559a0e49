//! The workspace README's kiln-host examples are this crate's doctests, word
//! for word. (The README's Rust blocks run as kiln-std doctests, which cannot
//! reach kiln-host, so there they are `ignore`d and this test keeps them
//! honest.)

const README: &str = include_str!("../../README.md");
const LIB: &str = include_str!("../src/lib.rs");
const RAYON: &str = include_str!("../src/rayon_jobs.rs");

/// The lines between the first `open` line after `marker` and the next
/// `close` line.
fn block_after<'a>(text: &'a str, marker: &str, open: &str, close: &str) -> Vec<&'a str> {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("`{marker}` not found"))..];
    rest.lines().skip_while(|line| line.trim() != open).skip(1).take_while(|line| line.trim() != close).collect()
}

/// A doc comment's example as a reader sees it: prefix stripped, hidden
/// (`# `) lines dropped.
fn shown<'a>(lines: Vec<&'a str>, prefix: &str) -> Vec<&'a str> {
    lines
        .into_iter()
        .map(|line| line.trim_start().strip_prefix(prefix).unwrap_or(line))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .filter(|line| *line != "#" && !line.starts_with("# "))
        .collect()
}

#[test]
fn readme_game_loop_is_the_tested_doctest() {
    let readme = block_after(README, "<!-- kiln-host game loop -->", "```rust,ignore", "```");
    let docs = shown(block_after(LIB, "//! ## A game loop", "//! ```", "//! ```"), "//!");
    assert!(docs.len() > 20, "the game-loop doctest was not found");
    assert_eq!(readme, docs, "README's kiln-host game loop differs from host-broker/src/lib.rs's");
}

#[test]
fn readme_rayon_example_is_the_tested_doctest() {
    let readme = block_after(README, "<!-- kiln-host rayon -->", "```rust,ignore", "```");
    let docs = shown(block_after(RAYON, "/// # Example", "/// ```", "/// ```"), "///");
    assert!(docs.len() > 8, "the rayon doctest was not found");
    assert_eq!(readme, docs, "README's kiln-host rayon example differs from host-broker/src/rayon_jobs.rs's");
}
