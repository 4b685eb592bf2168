// Package importer carries a CrowdSec LAPI's state into halapi (`halapi
// import`): it reads CrowdSec's config.yaml, opens its database (SQLite,
// MySQL/MariaDB or PostgreSQL) with plain SQL over database/sql (the
// tables and columns of CrowdSec v1.7's ent schema), and turns what it
// finds into a Source: machines with their bcrypt hashes, bouncers with
// their key hashes, the alerts of the active decisions, allowlists, the
// CAPI credentials. Plan compares a Source with an FSM and returns the
// fsm commands that add what is missing, so an import is idempotent: what
// is already there (machines and bouncers by name, decisions by UUID or
// by value, scope, type, origin, scenario and expiry, allowlist items by
// list name and value) is counted as present and left alone. What cannot
// be carried is reported with its reason, never dropped silently.
//
// ReadConfigYAML is the one reader of CrowdSec's config.yaml (FILE.local
// merged, environment expanded) for both `halapi import` and `halapi
// serve --crowdsec-config`. A live import is the admin route Route
// (AdminRoutes, served by package admin).
//
// The package never imports CrowdSec's own module: only its database
// layout and file formats are read.
package importer
