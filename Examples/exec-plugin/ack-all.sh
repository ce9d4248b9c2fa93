#!/bin/sh
# An exec plugin in shell: logs each delivery's body to stderr and acks it.
# Junction sends one JSON object per line; the id is the first field.
while IFS= read -r line; do
    id=$(printf '%s\n' "$line" | sed -n 's/^{"id":"\([0-9a-f]*\)".*/\1/p')
    printf 'got %s\n' "$line" >&2
    printf '{"ack": "%s"}\n' "$id"
done
