#!/usr/bin/env bash
# The workspace README repeats examples whose tested originals live in the
# crates (each crate's README is its rustdoc front page, so its blocks are
# that crate's doctests; a test never reads a file outside its crate). Each
# copy is marked `<!-- copy of PATH: MARK -->` before its code block; the
# original is the first code block after the line containing MARK in PATH
# (in a `.rs` file, a doc comment's block as a reader sees it: comment
# prefix stripped, hidden `# ` lines dropped). They must be equal.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lines of the first fenced block after the first line containing $2
# (fixed string) in file $1, with doc-comment prefixes and hidden lines
# removed when $1 is Rust source.
block_after() {
  local file=$1 mark=$2
  awk -v mark="$mark" -v rust="$([[ $file == *.rs ]] && echo 1 || echo 0)" '
    !found { if (index($0, mark)) found = 1; next }
    {
      line = $0
      if (rust) {
        sub(/^[ \t]*\/\/[\/!] ?/, "", line)
        if (line == "#" || line ~ /^# /) next
      }
      if (!inside) { if (line ~ /^```/) inside = 1; next }
      if (line ~ /^```/) exit
      print line
    }
  ' "$file"
}

failed=0
copies=0
while IFS= read -r marker; do
  spec=${marker#*copy of }
  spec=${spec% -->*}
  path=${spec%%: *}
  mark=${spec#*: }
  copies=$((copies + 1))
  if [ ! -f "$path" ]; then
    echo "README.md: $marker names a missing file $path" >&2
    failed=1
    continue
  fi
  original=$(block_after "$path" "$mark")
  copy=$(block_after README.md "$marker")
  if [ -z "$original" ]; then
    echo "README.md: no code block after \`$mark\` in $path" >&2
    failed=1
  elif [ "$original" != "$copy" ]; then
    echo "README.md: the copy of $path's \`$mark\` example differs from it:" >&2
    diff <(echo "$original") <(echo "$copy") >&2 || true
    failed=1
  else
    echo "README.md = $path ($mark): $(wc -l <<<"$copy") lines"
  fi
done < <(grep -o '<!-- copy of [^>]* -->' README.md)

if [ "$copies" -eq 0 ]; then
  echo "README.md has no marked copies: the check checks nothing" >&2
  exit 1
fi
exit "$failed"
