# METADATA
# title: Decision log masking used by the decision log tests
package system.log

# An API key header the deployment wants hidden.
mask contains "/input/attributes/request/http/headers/x-api-key"

# Keep the shape of the e-mail claim, hide the address.
mask contains {"op": "upsert", "path": "/input/identity/email", "value": "***"}

# Hide the query of search requests only.
mask contains "/input/parsed_query" if input.input.parsed_path[0] == "search"
