# Reading the events stream (the host application's mailer) and the audit
# trail (security and compliance). Permissions come from the same role map
# as the rest of the API: data.deputy.impersonation.role_permissions.
package deputy.manage

known_actions contains "events.read"

known_actions contains "audit.read"

allow contains "events.read" if "read_events" in _perms

allow contains "audit.read" if "read_audit" in _perms
