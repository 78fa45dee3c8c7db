package system.log

# Valid on an empty input, broken when the input carries a ticket.
mask contains "/input/ok"

mask contains 42 if input.input.ticket
