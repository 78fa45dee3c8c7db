// Package tests renders the Deputy Helm chart with the Helm SDK and decodes
// every manifest strictly, so a typo in a template fails here rather than
// at install time.
package tests
