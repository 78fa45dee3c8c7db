package delegation

// GrantID exposes grantID to the tests: the id an approval of a request
// answers for a user.
var GrantID = grantID
