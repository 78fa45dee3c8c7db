# METADATA
# title: Shared helpers of Deputy's decision policies
# description: |
#   What every decision package needs alike, defined once.
package deputy.lib

# METADATA
# description: An OPA-Envoy shaped denial with a machine-readable reason.
deny(status, reason) := {"allowed": false, "reason": reason, "http_status": status}
