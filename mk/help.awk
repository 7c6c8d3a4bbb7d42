# `make help`: one line per target, from the `## ` comment directly above its rule (variable
# assignments may stand between the comment and the rule). Read over the root Makefile and
# mk/*.mk in include order. With `-v check=1` (make help-check) it prints nothing on success
# and fails, naming them, when a .PHONY target has no `## ` line or a `## ` line names no
# .PHONY target.

FNR == 1 { doc = ""; continued = 0 }

/^## / {
    line = substr($0, 4)
    doc = doc == "" ? line : doc " " line
    next
}

# .PHONY lines, continued with a backslash or not.
/^\.PHONY *:/ || continued {
    continued = /\\$/
    sub(/^\.PHONY *: */, "")
    for (i = 1; i <= NF; i++) if ($i != "\\") phony[$i] = 1
    doc = ""
    next
}

# A variable assignment keeps the comment for the rule that follows it.
/^[A-Za-z0-9_]+ *(:|\?|\+|!)?= / { next }

# A rule: `name [name…]:` (not `:=`, not a recipe line).
/^[A-Za-z0-9][A-Za-z0-9_.-]*( +[A-Za-z0-9][A-Za-z0-9_.-]*)* *:([^=]|$)/ {
    names = $0
    sub(/ *:.*/, "", names)
    n = split(names, list, / +/)
    for (i = 1; i <= n; i++) {
        t = list[i]
        if (t in seen) continue
        seen[t] = 1
        if (doc != "") {
            order[++count] = t
            help[t] = doc
            if (length(t) > width) width = length(t)
        }
    }
    doc = ""
    next
}

{ doc = "" }

END {
    bad = 0
    for (t in phony) if (!(t in help)) { missing = missing " " t; bad = 1 }
    for (t in help) if (!(t in phony)) { stray = stray " " t; bad = 1 }
    if (check) {
        if (missing != "") print "help-check: .PHONY targets without a `## ` line above their rule:" missing > "/dev/stderr"
        if (stray != "") print "help-check: `## ` lines above targets that are not .PHONY:" stray > "/dev/stderr"
        exit bad
    }
    print "make TARGET [VAR=value…]   (no target: this list)"
    for (i = 1; i <= count; i++) printf "  %-" width "s  %s\n", order[i], help[order[i]]
    if (missing != "") print "undocumented:" missing
}
