#!/usr/bin/env bash
# Command-line option parser for recipe scripts, in the manner of Kaldi's
# utils/parse_options.sh.
#
# Usage, in a script, after its defaults and before its positional arguments
# are read:
#
#   stage=0
#   nj=4
#   use_gpu=false
#   help_message="Usage: $0 [options] <data-dir>"
#   . tools/parse_options.sh || exit 1
#   data=$1
#
# Each option --foo-bar VALUE (or --foo-bar=VALUE) sets the shell variable
# foo_bar, which the script must have defined before this file is sourced;
# that is what makes foo_bar an option. A variable whose value is true or false
# is a boolean: it takes only true or false. Other options:
#
#   --config FILE   source FILE (shell assignments such as nj=8) before the
#                   other options are applied, so the command line wins
#                   wherever it appears; may be given more than once
#   --help, -h      print help_message (when set) and every option with its
#                   current value, then exit 0
#   --              end of options
#
# Parsing stops at the first argument that does not start with "--"; the
# options are shifted off the caller's positional parameters, so "$@" then
# holds the rest. An unknown option, a missing value or a bad boolean prints an
# error listing the valid options and exits 1.
#
# The options (accepted, and listed by --help and in errors) are the script's
# lowercase shell variables (names matching [a-z][a-z0-9_]*, help_message
# excluded) that are not exported: an environment variable such as http_proxy
# is not an option. This file's own variables start with _po_
# and are unset before it returns.

# The caller's options: lowercase shell variables, less those it inherited.
_po_options() {
  local _po_name _po_env
  _po_env=" $(compgen -e | tr '\n' ' ') "
  for _po_name in $(compgen -v); do
    [[ $_po_name =~ ^[a-z][a-z0-9_]*$ ]] || continue
    [[ $_po_name == help_message ]] && continue
    [[ $_po_env == *" $_po_name "* ]] && continue
    printf '%s\n' "$_po_name"
  done
}

_po_list_options() {
  local _po_name
  for _po_name in $(_po_options); do
    printf '  --%-24s %s\n' "${_po_name//_/-}" "${!_po_name}"
  done
}

_po_fail() {
  echo "$0: $1" >&2
  echo "Valid options (current values):" >&2
  _po_list_options >&2
  echo "  --config FILE, --help" >&2
}

# First pass: source every --config file, so later options override it.
_po_i=1
while (( _po_i <= $# )); do
  _po_arg=${!_po_i}
  case $_po_arg in
    --) break ;;
    --config=*)
      _po_file=${_po_arg#--config=} ;;
    --config)
      _po_next=$((_po_i + 1))
      if (( _po_next > $# )); then _po_fail "option --config needs a file"; exit 1; fi
      _po_file=${!_po_next}
      _po_i=$_po_next ;;
    --help|-h) break ;;
    --*)
      # Skip the value of a --name VALUE option (not of --name=VALUE).
      [[ $_po_arg == *=* ]] || _po_i=$((_po_i + 1))
      _po_i=$((_po_i + 1))
      continue ;;
    *) break ;;
  esac
  if [[ ! -f $_po_file ]]; then
    echo "$0: config file '$_po_file' not found" >&2
    exit 1
  fi
  # shellcheck disable=SC1090
  . "$_po_file" || { echo "$0: failed to source config file '$_po_file'" >&2; exit 1; }
  _po_i=$((_po_i + 1))
done

# Second pass: set the options, shifting them off "$@".
while (( $# > 0 )); do
  case $1 in
    --) shift; break ;;
    --help|-h)
      [[ -n ${help_message:-} ]] && printf '%s\n\n' "$help_message"
      echo "Options (current values):"
      _po_list_options
      echo "  --config FILE              source FILE (shell assignments) first"
      exit 0 ;;
    --config=*) shift; continue ;;
    --config) shift 2; continue ;;
    --?*=*)
      _po_opt=${1%%=*}
      _po_value=${1#*=}
      shift ;;
    --?*)
      _po_opt=$1
      if (( $# < 2 )); then _po_fail "option $_po_opt needs a value"; exit 1; fi
      _po_value=$2
      shift 2 ;;
    *) break ;;
  esac
  _po_name=${_po_opt#--}
  _po_name=${_po_name//-/_}
  _po_valid=" $(_po_options | tr '\n' ' ') "
  if [[ $_po_valid != *" $_po_name "* ]]; then
    _po_fail "unknown option $_po_opt"
    exit 1
  fi
  if [[ ${!_po_name} == true || ${!_po_name} == false ]] \
      && [[ $_po_value != true && $_po_value != false ]]; then
    _po_fail "option $_po_opt is a boolean: expected true or false, got '$_po_value'"
    exit 1
  fi
  printf -v "$_po_name" '%s' "$_po_value"
done

unset -v _po_i _po_arg _po_next _po_file _po_opt _po_value _po_name _po_valid
unset -f _po_options _po_list_options _po_fail
true
