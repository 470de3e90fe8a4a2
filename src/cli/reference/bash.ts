/**
 * The bash completion script, made from the option table (table.ts): the
 * commands, each command's options (`--name=` for those that take a value),
 * and values where they are known: shm objects in /dev/shm for the options
 * that name a table, the flow names the running daemon lists for --name of
 * the flow commands, file names for files, and fixed words (protocols, trace
 * selections, hash modes). Static: no nfqlb process runs on a TAB except for
 * flow names, which only the daemon knows.
 */
import { GENERATED, type ReferenceCommand, type ReferenceOption } from './table';

/** A bash single-quoted word. */
function quote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The completion of one kind of value into COMPREPLY; `$3` is the value typed so far. */
function valueCompletion(values: NonNullable<ReferenceOption['values']>): string {
  // Names in /dev/shm and flow names are anyone's to choose: taken literally, never through compgen -W
  // (which expands $(...) and backquotes in its words) or an unquoted $(...) (which splits and globs).
  if (values === 'shm') return '_nfqlb_literal "$3" < <(_nfqlb_shm)';
  if (values === 'file') return 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$3"))';
  if (values === 'flow' || values === 'trace-flow') return `_nfqlb_literal "$3" < <(_nfqlb_flow_names ${values})`;
  const words = quote(values.words.join(' '));
  // A comma-separated list: complete the last item, keep what comes before it.
  if (values.list === true) return `local head=''; [[ $3 == *,* ]] && head=\${3%,*},; COMPREPLY=($(compgen -W ${words} -P "$head" -- "\${3##*,}"))`;
  return `COMPREPLY=($(compgen -W ${words} -- "$3"))`;
}

/** The bash completion script for `commands` (referenceCommands()). */
export function bashCompletion(commands: readonly ReferenceCommand[], version: string): string {
  // One case branch per kind of value, listing every command:option that has it.
  const branches = new Map<string, string[]>();
  for (const c of commands) {
    for (const o of c.options) {
      if (o.values === undefined) continue;
      const code = valueCompletion(o.values);
      branches.set(code, [...(branches.get(code) ?? []), `${c.name}:${o.name}`]);
    }
  }
  const valueCases = [...branches].map(([code, keys]) => `    ${keys.join('|')})\n      ${code} ;;`).join('\n');
  const optionCases = commands
    .map((c) => `    ${c.name}) opts=${quote(['--help', ...c.options.map((o) => `--${o.name}${o.takesValue ? '=' : ''}`)].join(' '))} ;;`)
    .join('\n');
  return `# bash completion for nfqlb (nfqlb-ts ${version})
# ${GENERATED}
# Install as /usr/share/bash-completion/completions/nfqlb (bash-completion loads it at the first
# TAB after nfqlb), or source it from ~/.bashrc. \`nfqlb completion bash\` prints this text.

# The shm objects in /dev/shm: tables, nfqlb-trace, the fragment statistics (regular files only).
_nfqlb_shm() {
  local f
  for f in /dev/shm/*; do
    [[ -f $f && ! -L $f ]] && printf '%s\\n' "\${f#/dev/shm/}"
  done
}

# COMPREPLY gets the lines on stdin that start with $1, each taken literally and quoted for the
# command line (printf %q): a name with a space, a quote, a glob or $(...) is offered as itself.
_nfqlb_literal() {
  local w
  while IFS= read -r w; do
    [[ $w == "$1"* ]] && COMPREPLY+=("$(printf '%q' "$w")")
  done
}

# The names of the flows ($1 = flow) or trace-flows ($1 = trace-flow) the running daemon lists
# (at NFQLB_FLOW_ADDRESS); nothing when none answers within 2 seconds.
_nfqlb_flow_names() {
  timeout 2 "\${COMP_WORDS[0]}" "$1-list-names" 2>/dev/null | sed -n 's/^ *"\\(.*\\)",\\{0,1\\}$/\\1/p'
}

# COMPREPLY for the value of option $2 (no dashes) of command $1, typed so far: $3.
_nfqlb_values() {
  case "$1:$2" in
${valueCases}
  esac
}

_nfqlb() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} cmd=\${COMP_WORDS[1]}
  local opts='' opt='' value='' prefix='' name
  COMPREPLY=()
  if (( COMP_CWORD == 1 )); then
    COMPREPLY=($(compgen -W ${quote(commands.map((c) => c.name).join(' '))} -- "$cur"))
    return 0
  fi
  case $cmd in
${optionCases}
    *) return 0 ;;
  esac
  # The option whose value is typed: "--opt=VALUE" as one word; "--opt" "=" ["VALUE"] as bash
  # splits at '=' (COMP_WORDBREAKS); "--opt" "VALUE" for an option that takes one.
  if [[ $cur == -*=* ]]; then
    opt=\${cur%%=*} value=\${cur#*=} prefix=\${cur%%=*}=
  elif [[ $cur == = && $prev == -* ]]; then
    opt=$prev
  elif [[ $prev == = ]] && (( COMP_CWORD >= 3 )); then
    opt=\${COMP_WORDS[COMP_CWORD-2]} value=$cur
  elif [[ $prev == -?* && $prev != *=* ]]; then
    name=\${prev#-}; name=\${name#-}
    [[ " $opts " == *" --$name= "* ]] && opt=$prev value=$cur
  fi
  if [[ -n $opt ]]; then
    name=\${opt#-}; name=\${name#-}
    _nfqlb_values "$cmd" "$name" "$value"
    [[ -n $prefix ]] && COMPREPLY=("\${COMPREPLY[@]/#/$prefix}")
    return 0
  fi
  if [[ $cmd == completion && $cur != -* ]]; then
    COMPREPLY=($(compgen -W 'bash' -- "$cur"))
    return 0
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  [[ \${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null
  return 0
}
complete -F _nfqlb nfqlb
`;
}
