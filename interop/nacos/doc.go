// Package nacos holds regkit's live interop tests against nacos-sdk-go, the
// official Go client of Nacos. It is a module of its own
// (github.com/regkit/regkit/interop/nacos) so that nacos-sdk-go and its
// dependencies never enter the root module's requirements.
package nacos
