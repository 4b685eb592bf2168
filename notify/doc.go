// Package notify sends alerts to CrowdSec's notification plugins (the
// unmodified notification-http, -slack, -email, -splunk, -sentinel, -file
// binaries) exactly once cluster-wide.
//
// It owns:
//
//   - the plugin wire protocol (proto.go): hashicorp/go-plugin over gRPC
//     with the reference's handshake (protocol version 1, magic cookie key
//     CROWDSEC_PLUGIN_KEY, a random cookie value per process) and the
//     proto.Notifier service (Notify, Configure), its three messages
//     encoded by hand with protowire (no crowdsec module, no generated
//     code);
//   - notification configs (config.go): CrowdSec's notifications/*.yaml,
//     parsed from a map of file name to content (ParseConfigs), so they can
//     come from files or from a replicated bundle; format templates with
//     sprig and the reference's helpers (format.go);
//   - running the plugins (plugin.go): the reference's binary checks
//     (owner, no group/world write, no setgid), plugin user/group, one
//     process per type configured with every config of the type, killed
//     with halapi (Pdeathsig on Linux);
//   - the leader-only dispatcher (dispatch.go): it walks stored alerts
//     after a replicated cursor per notification name (fsm.NotifyCursor),
//     groups them as group_wait/group_threshold say, formats, calls Notify
//     with the config's timeout, retries max_retry times, then logs and
//     counts the loss; each batch is announced in flight and its outcome
//     recorded through raft, so a leader loss repeats at most the batch in
//     flight, which the next leader reports;
//   - the admin routes behind `halapi notifications list|inspect|test`
//     (admin.go) and the halapi_notifications_* metrics.
//
// It must not: run plugins on a follower (except the one-shot plugin of a
// `notifications test` asked on that node), write state except through
// the Applier (raft), read notification configs from disk itself (the
// caller hands a ConfigSource), import the crowdsec module, or log a
// plugin's configuration (webhooks, passwords, tokens).
package notify
