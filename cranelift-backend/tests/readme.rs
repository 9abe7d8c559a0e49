//! The workspace README's Cranelift quickstart is the crate docs' quickstart
//! doctest (`docs/std_quickstart.md`, included by `src/lib.rs` with feature
//! `std-adapter`), word for word. (The README's Rust blocks run as kiln-std
//! doctests, which cannot reach kiln-cranelift, so there it is `ignore`d and
//! this test keeps it honest.)

const README: &str = include_str!("../../README.md");
const QUICKSTART: &str = include_str!("../docs/std_quickstart.md");
const LIB: &str = include_str!("../src/lib.rs");

/// The lines between the first `open` line after `marker` and the next
/// `close` line.
fn block_after<'a>(text: &'a str, marker: &str, open: &str, close: &str) -> Vec<&'a str> {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("`{marker}` not found"))..];
    rest.lines().skip_while(|line| line.trim() != open).skip(1).take_while(|line| line.trim() != close).collect()
}

#[test]
fn readme_quickstart_is_the_tested_doctest() {
    let readme = block_after(README, "<!-- kiln-cranelift quickstart -->", "```rust,ignore", "```");
    let docs = block_after(QUICKSTART, "<!--", "```rust", "```");
    assert!(docs.len() > 10, "the quickstart doctest was not found");
    assert_eq!(readme, docs, "README's Cranelift quickstart differs from cranelift-backend/docs/std_quickstart.md");
    assert!(
        LIB.contains(r#"doc = include_str!("../docs/std_quickstart.md")"#),
        "the crate docs no longer include the quickstart doctest"
    );
}
