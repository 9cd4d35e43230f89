# bash completion for lamina. Commands, groups and options are read from `lamina --help` and
# `lamina COMMAND --help` (tools/usage.cc, the one table); image, container and volume names
# from the store that --root names.

_lamina_section() {
    # The first words of the lines under the heading $1 in the help text on stdin.
    awk -v heading="$1" 'index($0, heading) == 1 { s = 1; next } /^$/ { s = 0 } s { print $1 }'
}

_lamina_options() {
    awk '/^Options:/ { s = 1; next } s {
        for (i = 1; i <= NF; i++) { if ($i !~ /^-/) break; sub(/,$/, "", $i); print $i }
    }'
}

_lamina() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local -a lamina=(lamina) command=()
    local i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((${#command[@]} == 0)); then
            case $w in
                --root | --format) lamina+=("$w" "${COMP_WORDS[i + 1]}"); ((i++)); continue ;;
                --root=* | --format=*) lamina+=("$w"); continue ;;
                -*) continue ;;
            esac
            command=("$w")
        elif ((${#command[@]} == 1)) && [[ $w != -* ]] &&
            "${lamina[@]}" "${command[0]}" --help 2>/dev/null | grep -q '^Commands:'; then
            command+=("$w")
            break
        else
            break
        fi
    done

    if ((${#command[@]} == 0)); then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--root --format --help --version" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$("${lamina[@]}" --help | _lamina_section Commands: ;
                "${lamina[@]}" --help | _lamina_section Groups)" -- "$cur"))
        fi
        return
    fi
    local help
    help=$("${lamina[@]}" "${command[@]}" --help 2>/dev/null) || return
    if [[ $help == *$'\nCommands:\n'* ]]; then
        COMPREPLY=($(compgen -W "$(_lamina_section Commands: <<<"$help")" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_lamina_options <<<"$help")" -- "$cur"))
        return
    fi
    case $prev in
        -i | --input | -o | --output | --prefetch-list) compopt -o default; COMPREPLY=(); return ;;
    esac
    local names
    case "${command[*]}" in
        history | tag | rmi | save | push | convert | "image "*)
            names=$("${lamina[@]}" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
                grep -v '^<none>') ;;
        create | "container create")
            names=$("${lamina[@]}" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null) ;;
        cp | "container cp")
            # CONTAINER: then host paths (the file completion).
            names=$("${lamina[@]}" ps -a --format '{{.Names}}:' 2>/dev/null)
            compopt -o default -o nospace ;;
        mount | umount | unmount | rm | diff | commit | export | rename | "container "*)
            names=$("${lamina[@]}" ps -a --format '{{.Names}}' 2>/dev/null) ;;
        inspect)
            names="$("${lamina[@]}" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null)
$("${lamina[@]}" ps -a --format '{{.Names}}' 2>/dev/null)" ;;
        "volume inspect" | "volume rm")
            names=$("${lamina[@]}" volume ls -q 2>/dev/null) ;;
        import | load) compopt -o default; COMPREPLY=(); return ;;
        help) names=$("${lamina[@]}" --help | _lamina_section Commands: ;
            "${lamina[@]}" --help | _lamina_section Groups) ;;
    esac
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
}

complete -F _lamina lamina
