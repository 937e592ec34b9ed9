#!/usr/bin/env bash
# Reproduce app/static/vendor/: the browser assets of the API docs (Swagger UI) and the GraphQL IDE
# (GraphiQL with React), taken from the npm registry at pinned versions, with their licences.
# The output is committed; nothing is fetched when the service runs. Needs npm and tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=app/static/vendor
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PACKAGES=(swagger-ui-dist@5.35.0 graphiql@3.9.0 react@18.3.1 react-dom@18.3.1)
(cd "$WORK" && npm pack --silent "${PACKAGES[@]}" >/dev/null)

# take <package-name> <file inside the package>...: copy the files (and the licence) to $OUT/<package-name>/
take() {
  local name=$1; shift
  local dir="$WORK/$name"
  mkdir -p "$dir" "$OUT/$name"
  tar -xzf "$WORK"/"$name"-[0-9]*.tgz -C "$dir" --strip-components=1
  for file in LICENSE "$@"; do cp "$dir/$file" "$OUT/$name/$(basename "$file")"; done
}

rm -rf "$OUT"
take swagger-ui-dist swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css NOTICE
take graphiql graphiql.min.js graphiql.min.css
take react umd/react.production.min.js
take react-dom umd/react-dom.production.min.js
# the bundles end with a source map comment; the maps are not shipped
find "$OUT" -name '*.js' -exec sed -i '/^\/\/# sourceMappingURL=/d' {} +
printf '%s\n' "${PACKAGES[@]}" > "$OUT/VERSIONS"
du -sh "$OUT"
