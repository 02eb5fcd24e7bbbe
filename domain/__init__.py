"""Pure conversation-state domain: objects, rules and ports. No I/O lives here."""
