# hymbactl.bash: bash completion for hymbactl(1).  Commands and options are read from hymbactl's own
# --help (so they never fall out of step with the program); session ids come from "hymbactl sessions"
# on the bus the command line names.  Works with or without the bash-completion package.

# _hymbactl_help [COMMAND]: hymbactl's help text (of COMMAND when given).
_hymbactl_help()
{
    "${_hymbactl_cmd:-hymbactl}" ${1:+"$1"} --help 2>/dev/null
}

# _hymbactl_options TEXT: the option names in a help text.
_hymbactl_options()
{
    grep -oE "(^|[][[:space:]|,])--?[[:alpha:]][[:alnum:]-]*" <<<"$1" | sed 's/^[^-]*//' | sort -u
}

# _hymbactl_arg_options TEXT: the options that take a value (an upper-case word follows them).
_hymbactl_arg_options()
{
    grep -oE -- "--?[[:alpha:]][[:alnum:]-]* [A-Z][A-Z]*" <<<"$1" | cut -d' ' -f1 | sort -u
}

_hymbactl()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local _hymbactl_cmd=${COMP_WORDS[0]}
    local i word cmd="" help="" busopts=() expect_value=""
    local global_help
    # The global options: the help without its Commands section (which shows commands' options).
    global_help=$(_hymbactl_help | awk '/^Commands:/ { skip = 1 } skip && /^$/ { skip = 0 } !skip')
    local global_args
    global_args=$(_hymbactl_arg_options "$global_help")

    # Find the command and the bus options before it.
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $expect_value ]]; then
            busopts+=("$word")
            expect_value=""
            continue
        fi
        case $word in
            --user|--system) busopts+=("$word") ;;
            -*)
                if grep -qxF -- "$word" <<<"$global_args"; then
                    busopts+=("$word")
                    expect_value=1
                fi ;;
            *) cmd=$word; break ;;
        esac
    done

    COMPREPLY=()
    if [[ -z $cmd ]]; then
        if grep -qxF -- "$prev" <<<"$global_args"; then
            return 0        # a value (a bus address): nothing sensible to offer
        fi
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$(_hymbactl_options "$global_help")" -- "$cur")
        else
            local commands
            commands=$(_hymbactl_help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }')
            mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        fi
        return 0
    fi

    help=$(_hymbactl_help "$cmd")
    local usage args
    usage=$(grep -m1 '^Usage:' <<<"$help" | sed 's/\[-[^]]*\]//g')
    args=$(_hymbactl_arg_options "$help")
    if grep -qxF -- "$prev" <<<"$args"; then
        case $prev in
            -s|--session) ;;
            *) return 0 ;;  # a number or a text
        esac
    elif [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_hymbactl_options "$help")" -- "$cur")
        return 0
    elif ! grep -qwE 'ID|SESSION' <<<"$usage"; then
        # A command that reads a file (import FILE) gets file names.
        if grep -qw 'FILE' <<<"$usage"; then
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
        return 0
    fi
    # Session ids of the caller, from the daemon on the same bus (nothing when it is unreachable).
    local ids
    ids=$("$_hymbactl_cmd" "${busopts[@]}" sessions 2>/dev/null | awk 'NR > 1 { print $1 }')
    mapfile -t COMPREPLY < <(compgen -W "$ids" -- "$cur")
    return 0
}

complete -F _hymbactl hymbactl
