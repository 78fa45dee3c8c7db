package deputy.manage_test

import data.deputy.manage

test_stream_readers[note] if {
	some note, tc in {
		"mailer reads events": {"action": "events.read", "roles": ["mailer"], "allowed": true},
		"mailer cannot read audit": {"action": "audit.read", "roles": ["mailer"], "allowed": false},
		"auditor reads audit": {"action": "audit.read", "roles": ["auditor"], "allowed": true},
		"admin reads both": {"action": "events.read", "roles": ["admin"], "allowed": true},
		"support agent reads neither": {"action": "audit.read", "roles": ["support_agent"], "allowed": false},
		"customer reads neither": {"action": "events.read", "roles": ["customer"], "allowed": false},
	}
	d := manage.decision with input as {"action": tc.action, "identity": {"sub": "u1", "roles": tc.roles}, "target": {}}
	d.allowed == tc.allowed
}
