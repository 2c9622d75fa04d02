# Sourced by scripts/setup.sh and scripts/bench.sh (from the repository's root): where the
# tools live and how they are installed, each once.

python=${PYTHON:-python3}
tools="${STRATA_TOOLS:-$HOME/.cache/strata-tools}"

# venv_install WHAT DIR REQUIREMENTS: a Python environment in DIR with REQUIREMENTS, made
# again only when they change (their hash is kept in DIR/.requirements.sha).
venv_install() {
  local what=$1 dir=$2 requirements=$3 want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements.sha" 2>/dev/null)" = "$want" ]; then
    echo "setup: $what up to date ($dir)"
    return
  fi
  echo "setup: installing $what into $dir"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --upgrade pip
  "$dir/bin/pip" install --quiet -r "$requirements"
  echo "$want" > "$dir/.requirements.sha"
}

# maven_fetch WHAT DIR POM [MAVEN ARGS...]: copies POM's artifacts (and their dependencies)
# into DIR with Maven, once; DIR/.complete marks a finished fetch.
maven_fetch() {
  local what=$1 dir=$2 pom=$3
  shift 3
  if [ -f "$dir/.complete" ]; then
    echo "setup: $what present ($dir)"
    return
  fi
  command -v mvn >/dev/null 2>&1 || { echo "setup: fetching $what needs Maven (mvn is not on the PATH)" >&2; exit 1; }
  echo "setup: fetching $what into $dir"
  rm -rf "$dir"
  mvn -q -f "$pom" dependency:copy-dependencies "$@"
  touch "$dir/.complete"
}
