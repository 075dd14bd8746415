package brokerlink

// StreamOn lets tests ask for a session's stream over any link.
var StreamOn = streamOn
