package deputy.authz

import data.deputy.unused

decision := {"allowed": true, "reason": data.deputy.authz.label}
