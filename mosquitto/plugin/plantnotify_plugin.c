/*
 * plantnotify's Mosquitto 2.0 plugin (plugin API v5): JWT authentication, per-user topic
 * rights, a per-user connection limit, expiry kicks and session events for the bridge.
 *
 * This file is glue only: token rules live in token.c, topic rights in acl.c, the live
 * connection table in sessions.c. Events used: BASIC_AUTH, EXT_AUTH_START (MQTT 5 method
 * "jwt"), ACL_CHECK, TICK, DISCONNECT.
 * CONNECT outcomes are counted and published (retained, every stats_interval seconds when they
 * changed) on plantnotify/broker/stats, which `plantnotify broker` turns into Prometheus metrics.
 *
 * Options (plugin_opt_<name>; see README "Broker security model and plugin options"):
 *   jwt_alg, jwt_secret | jwt_secret_file | jwt_public_key_file, audience, issuer, leeway,
 *   max_token_bytes, max_connections_per_user, expiry_check_interval, stats_interval,
 *   revocation_sync_timeout, max_revocations. Revoked tokens: revocations.c, fed by the API on
 *   $CONTROL/plantnotify/revocations (CONTROL event, service connections only).
 * Presence: per-user SessionSnapshots on plantnotify/sessions/{user} when a user's connections
 * change, and the same snapshots of one TICK together in one message on
 * plantnotify/broker/session-changes (what the bridge follows: a mass disconnect is a few dozen
 * messages, not one per user); none retained: the broker holds nothing per user for them. The
 * whole picture on request ($CONTROL/plantnotify/sessions, service connections only), sent to
 * the requester alone on plantnotify/broker/sessions in at most PICTURE_MAX_PARTS messages.
 * Unknown or invalid options stop the broker with a log line saying what to fix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl.h"
#include "persistent.h"
#include "revocations.h"
#include "sessions.h"
#include "token.h"

/* Service topics; must match plantnotify/contracts/topics.py (tests check both agree). */
#define BOOT_TOPIC "plantnotify/broker/boot"
#define SESSIONS_TOPIC_PREFIX "plantnotify/sessions/"
#define STATS_TOPIC "plantnotify/broker/stats"
#define REVOCATIONS_TOPIC "$CONTROL/plantnotify/revocations"
#define PICTURE_REQUEST_TOPIC "$CONTROL/plantnotify/sessions"
#define PICTURE_TOPIC "plantnotify/broker/sessions"
#define CHANGES_TOPIC "plantnotify/broker/session-changes"
#define FLUSH_SECONDS 0.1
/* A changes message past this size is sent at once and another one started. */
#define CHANGES_MAX_BYTES (256 * 1024)
/*
 * A picture goes to its requester in at most this many messages (QoS 1), whatever the number of
 * users: far below max_queued_messages (1,000) + max_inflight_messages, so none is dropped for a
 * full queue; parts grow instead (about 60 bytes per user, so 20,000 users are 32 parts of ~40 KB).
 */
#define PICTURE_MAX_PARTS 32
#define PICTURE_MIN_USERS_PER_PART 500
#define PICTURE_MAX_REQUESTS 16
#define PICTURE_REQUEST_ID_MAX 64
#define REVOCATION_PRUNE_SECONDS 60

#define LOG_PREFIX "plantnotify: "
/* Built with -fvisibility=hidden: only the plugin API entry points are exported. */
#define PN_EXPORT __attribute__((visibility("default")))
#define MAX_KICKS_PER_CHECK 1024
/* MQTT 5 authentication method whose data is the token. */
#define AUTH_METHOD "jwt"

/* CONNECT outcomes; the names are the JSON keys of BrokerStats (plantnotify/contracts). */
typedef enum {
	CONNECT_ACCEPTED = 0,
	CONNECT_EXPIRED,       /* a token past exp: usually an app that did not refresh in time */
	CONNECT_INVALID_TOKEN, /* any other token failure: signature, audience, malformed ... */
	CONNECT_IDENTITY,      /* username or client id not the token's user, client id taken */
	CONNECT_LIMIT,         /* max_connections_per_user reached */
	CONNECT_ERROR,         /* the broker's own failure (out of memory) */
	CONNECT_OUTCOMES
} connect_outcome;

static const char *const CONNECT_NAMES[CONNECT_OUTCOMES] = {
	"accepted", "expired", "invalidToken", "identity", "limit", "error",
};

/* A service asked for the whole picture: sent from the next TICK. */
typedef struct picture_request {
	char *client_id;
	char request_id[PICTURE_REQUEST_ID_MAX + 1];
} picture_request;

/* The snapshots of one TICK, as one message: {"bootId","sessions":[SessionSnapshot, ...]}. */
typedef struct changes {
	char *text;
	size_t len, cap, count;
} changes;

typedef struct plugin_state {
	mosquitto_plugin_id_t *id;
	pn_token_config token;
	pn_sessions *sessions;
	int max_connections;
	long expiry_interval;
	time_t next_expiry_check;
	long snapshot_rate;       /* snapshots per second at most (token bucket) */
	double snapshot_tokens;
	struct timespec last_flush; /* when the last changes were flushed */
	struct timespec bucket_at;  /* when the snapshot bucket was last filled */
	char boot_id[33];
	unsigned long long seq;
	unsigned long long connects[CONNECT_OUTCOMES];
	int stats_dirty;
	long stats_interval;
	time_t next_stats;
	int registered; /* bit per registered event, for the one cleanup path */
	pn_revocations *revocations;
	long revocation_sync_timeout; /* refuse users until the feed's SYNC, at most this long */
	time_t started;
	time_t next_revocation_prune;
	picture_request requests[PICTURE_MAX_REQUESTS];
	size_t request_count;
	changes changes;
} plugin_state;

/* ------------------------------------------------------------------ helpers */

/* Log-safe copy of client-controlled text: printable ASCII only, bounded. */
static const char *safe(const char *in, char *buf, size_t buflen)
{
	size_t i, o = 0;
	if(!in) return "(none)";
	for(i = 0; in[i] && o + 4 < buflen; i++){
		unsigned char c = (unsigned char)in[i];
		buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if(in[i]) {
		buf[o++] = '.'; buf[o++] = '.'; buf[o++] = '.';
	}
	buf[o] = '\0';
	return buf;
}

/* The username is logged only when it is a valid user id (it may be a pasted token). */
static const char *loggable_user(const char *username)
{
	return pn_valid_user_id(username) ? username : "(invalid)";
}

static const char *access_name(int access)
{
	switch(access){
		case MOSQ_ACL_READ: return "READ";
		case MOSQ_ACL_WRITE: return "WRITE";
		case MOSQ_ACL_SUBSCRIBE: return "SUBSCRIBE";
		case MOSQ_ACL_UNSUBSCRIBE: return "UNSUBSCRIBE";
	}
	return "?";
}

static int new_boot_id(char out[33])
{
	unsigned char raw[16];
	size_t i;
	if(getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) return -1;
	for(i = 0; i < sizeof(raw); i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

static void publish_retained(const char *topic, const char *json)
{
	int rc = mosquitto_broker_publish_copy(NULL, topic, (int)strlen(json), json, 1, true, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "could not publish %s (error %d)", topic, rc);
	}
}

static connect_outcome outcome_of(pn_result r)
{
	switch(r){
		case PN_OK: return CONNECT_ACCEPTED;
		case PN_ERR_EXPIRED: return CONNECT_EXPIRED;
		case PN_ERR_USERNAME:
		case PN_ERR_CLIENT_ID: return CONNECT_IDENTITY;
		case PN_ERR_NOMEM: return CONNECT_ERROR;
		default: return CONNECT_INVALID_TOKEN;
	}
}

static int count_connect(plugin_state *st, connect_outcome o, int rc)
{
	st->connects[o]++;
	st->stats_dirty = 1;
	return rc;
}

static void publish_stats(plugin_state *st, time_t now)
{
	char json[512];
	size_t n;
	int i, w;

	n = (size_t)snprintf(json, sizeof(json), "{\"bootId\":\"%s\",\"at\":%lld,\"live\":%zu,\"connects\":{",
			st->boot_id, (long long)now, pn_sessions_size(st->sessions));
	for(i = 0; i < CONNECT_OUTCOMES && n < sizeof(json); i++){
		w = snprintf(json + n, sizeof(json) - n, "%s\"%s\":%llu", i ? "," : "", CONNECT_NAMES[i],
				st->connects[i]);
		if(w < 0) return;
		n += (size_t)w;
	}
	if(n + 3 > sizeof(json)) return; /* cannot happen with these names; never publish a cut */
	memcpy(json + n, "}}", 3);
	publish_retained(STATS_TOPIC, json);
	st->stats_dirty = 0;
}

/* Publishes the changes collected so far (if any) and starts over. */
static void send_changes(plugin_state *st)
{
	changes *c = &st->changes;
	int rc;
	if(c->count == 0) return;
	memcpy(c->text + c->len, "]}", 3); /* room kept by changes_add */
	c->len += 2;
	rc = mosquitto_broker_publish_copy(NULL, CHANGES_TOPIC, (int)c->len, c->text, 1, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "could not publish %s (error %d)", CHANGES_TOPIC, rc);
	}
	c->len = c->count = 0;
	if(c->cap > 64 * 1024){ /* a burst's buffer is not kept */
		free(c->text);
		c->text = NULL;
		c->cap = 0;
	}
}

/* Appends one snapshot to this TICK's changes message. */
static void changes_add(plugin_state *st, const char *json)
{
	changes *c = &st->changes;
	size_t n = strlen(json), need;
	char *p;
	if(c->len + n > CHANGES_MAX_BYTES) send_changes(st);
	need = c->len + n + sizeof(st->boot_id) + 32; /* prefix or comma, json, "]}" */
	if(need > c->cap){
		size_t cap = c->cap ? c->cap : 4096;
		while(cap < need) cap *= 2;
		p = realloc(c->text, cap);
		if(!p){
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory: a session change not sent on %s",
					CHANGES_TOPIC);
			return;
		}
		c->text = p;
		c->cap = cap;
	}
	if(c->count == 0){
		c->len = (size_t)snprintf(c->text, c->cap, "{\"bootId\":\"%s\",\"sessions\":[", st->boot_id);
	}else{
		c->text[c->len++] = ',';
	}
	memcpy(c->text + c->len, json, n + 1);
	c->len += n;
	c->count++;
}

/* A user's snapshot: on its own topic, and into this TICK's changes (never retained). */
static void emit_snapshot(const char *user, const char *json, void *ctx)
{
	plugin_state *st = ctx;
	char topic[sizeof(SESSIONS_TOPIC_PREFIX) + PN_USER_ID_MAX];
	int rc;
	snprintf(topic, sizeof(topic), SESSIONS_TOPIC_PREFIX "%s", user);
	rc = mosquitto_broker_publish_copy(NULL, topic, (int)strlen(json), json, 1, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "could not publish %s (error %d)", topic, rc);
	}
	changes_add(st, json);
}

static const char *client_id_of(const void *client)
{
	return mosquitto_client_id((const struct mosquitto *)client);
}

/* Snapshots allowed now: a token bucket of snapshot_rate per second, bursts of a tenth of it. */
/* Seconds since the last flush (TICK fires on every pass of the broker's loop: often). */
static double since_flush(const plugin_state *st)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - st->last_flush.tv_sec) + (double)(now.tv_nsec - st->last_flush.tv_nsec) / 1e9;
}

static size_t snapshot_budget(plugin_state *st)
{
	struct timespec now;
	double elapsed, cap = (double)st->snapshot_rate / 10.0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed = (double)(now.tv_sec - st->bucket_at.tv_sec) + (double)(now.tv_nsec - st->bucket_at.tv_nsec) / 1e9;
	st->bucket_at = now;
	if(elapsed > 0) st->snapshot_tokens += elapsed * (double)st->snapshot_rate;
	if(st->snapshot_tokens > cap) st->snapshot_tokens = cap;
	return st->snapshot_tokens >= 1.0 ? (size_t)st->snapshot_tokens : 0;
}

/* ------------------------------------------------------------------ callbacks */

/*
 * After the token was checked (r): the CONNECT decision shared by both ways of presenting the
 * token (password, or MQTT 5 authentication method "jwt"): identity, connection limit, record.
 */
static int admit(plugin_state *st, struct mosquitto *client, const char *username, const char *client_id,
		pn_result r, const pn_claims *claims)
{
	int others;
	char buf[96];

	if(r != PN_OK){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused CONNECT user=%s client=%s: %s",
				loggable_user(username),
				pn_valid_user_id(username) && pn_valid_client_id(username, client_id)
					? client_id : safe(client_id, buf, 32),
				pn_result_str(r));
		return count_connect(st, outcome_of(r), MOSQ_ERR_AUTH);
	}
	if(!claims->is_service){
		time_t now = time(NULL);
		if(pn_rev_is_revoked(st->revocations, claims->sub, claims->sid, claims->iat, (long long)now)){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused CONNECT user=%s client=%s: "
					"token revoked (logged out, password changed or account deleted)", claims->sub, client_id);
			return count_connect(st, CONNECT_INVALID_TOKEN, MOSQ_ERR_AUTH);
		}
		if(st->revocation_sync_timeout && !pn_rev_synced(st->revocations)
				&& now < st->started + st->revocation_sync_timeout){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused CONNECT user=%s client=%s: "
					"revocations not loaded yet (revocation_sync_timeout)", claims->sub, client_id);
			return count_connect(st, CONNECT_ERROR, MOSQ_ERR_AUTH);
		}
	}
	/* Overlapping ids ("42" and "42-x") could name the same client id: never hand over. */
	if(pn_sessions_client_id_owned_by_other(st->sessions, claims->sub, client_id)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused CONNECT user=%s client=%s: "
				"client id is live for another user", claims->sub, client_id);
		return count_connect(st, CONNECT_IDENTITY, MOSQ_ERR_AUTH);
	}
	if(!claims->is_service){
		others = pn_sessions_count_other(st->sessions, claims->sub, client_id);
		if(others >= st->max_connections){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused CONNECT user=%s client=%s: "
					"%d live connections (max_connections_per_user %d)",
					claims->sub, client_id, others, st->max_connections);
			return count_connect(st, CONNECT_LIMIT, MOSQ_ERR_AUTH);
		}
	}
	if(pn_sessions_add(st->sessions, client, claims->sub, claims->exp, claims->is_service)){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "refused CONNECT user=%s: out of memory", claims->sub);
		return count_connect(st, CONNECT_ERROR, MOSQ_ERR_AUTH);
	}
	/* Debug level: Mosquitto logs every connection already, and this is the hot path. */
	mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "authenticated user=%s client=%s role=%s exp=%lld",
			claims->sub, client_id, claims->is_service ? "service" : "user", claims->exp);
	if(!claims->is_service && !mosquitto_client_clean_session(client)) pn_persistent_opened(claims->sub, client_id);
	return count_connect(st, CONNECT_ACCEPTED, MOSQ_ERR_SUCCESS);
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	plugin_state *st = userdata;
	const char *client_id = mosquitto_client_id(ed->client);
	pn_claims claims;
	pn_result r;
	(void)event;

	r = pn_check_connect(&st->token, ed->username, client_id, ed->password, time(NULL), &claims);
	/*
	 * Mosquitto 2.0 keeps the password (the token) for the whole connection and the plugin API
	 * cannot free it; at least it stops being a usable credential in the broker's memory.
	 * (MQTT 5 clients can send the token as authentication data instead: see on_ext_auth.)
	 */
	if(ed->password) explicit_bzero(ed->password, strlen(ed->password));
	return admit(st, ed->client, ed->username, client_id, r, &claims);
}

/*
 * MQTT 5 enhanced authentication, method "jwt": the token is the authentication data, which
 * Mosquitto frees after this call (a password it keeps for the whole connection). Sent again
 * in an AUTH packet on a live connection (re-authentication), a fresh token of the same user
 * extends the connection's expiry without reconnecting.
 */
static int on_ext_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_extended_auth *ed = event_data;
	plugin_state *st = userdata;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *username = mosquitto_client_username(ed->client);
	const pn_conn *live;
	pn_claims claims;
	pn_result r;
	(void)event;

	if(!ed->auth_method || strcmp(ed->auth_method, AUTH_METHOD) != 0){
		return MOSQ_ERR_PLUGIN_DEFER; /* not ours: Mosquitto answers "bad authentication method" */
	}
	r = pn_check_connect_len(&st->token, username, client_id, ed->data_in, ed->data_in_len, time(NULL), &claims);
	live = pn_sessions_find(st->sessions, ed->client);
	if(live && !live->departed){
		/* Re-authentication: same user, a token that is valid now; the role stays. */
		if(r == PN_OK && !claims.is_service
				&& pn_rev_is_revoked(st->revocations, claims.sub, claims.sid, claims.iat, (long long)time(NULL))){
			r = PN_ERR_ROLE; /* a revoked token extends nothing */
		}
		if(r != PN_OK || strcmp(claims.sub, pn_conn_user(live)) != 0 || claims.is_service != live->is_service){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused re-authentication user=%s client=%s: %s",
					pn_conn_user(live), client_id, r != PN_OK ? pn_result_str(r) : "different user or role");
			return MOSQ_ERR_AUTH;
		}
		pn_sessions_set_exp(st->sessions, ed->client, claims.exp);
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "re-authenticated user=%s client=%s exp=%lld",
				claims.sub, client_id, claims.exp);
		return MOSQ_ERR_SUCCESS;
	}
	return admit(st, ed->client, username, client_id, r, &claims);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	plugin_state *st = userdata;
	const pn_conn *conn = pn_sessions_find(st->sessions, ed->client);
	const char *username;
	int allowed;
	char buf[160];
	(void)event;

	if(conn){
		if(ed->access != MOSQ_ACL_UNSUBSCRIBE
				&& (long long)time(NULL) - st->token.leeway >= conn->exp){
			allowed = 0; /* expired: nothing more until the TICK kicks it */
		}else{
			allowed = pn_acl_allows(pn_conn_user(conn), conn->is_service, ed->topic, ed->access, ed->retain);
		}
		username = pn_conn_user(conn);
	}else{
		/*
		 * No record: an offline persistent session receiving a message into its queue
		 * (Mosquitto re-checks READ when the client comes back), or a delayed Will. Decide by
		 * the username it authenticated with: READ with the role that username last had,
		 * WRITE (a delayed Will) with user rights only; never SUBSCRIBE.
		 */
		username = mosquitto_client_username(ed->client);
		if(!pn_valid_user_id(username)){
			allowed = 0;
		}else if(ed->access == MOSQ_ACL_READ){
			allowed = pn_acl_allows(username, pn_sessions_is_service_user(st->sessions, username),
					ed->topic, ed->access, 0);
		}else if(ed->access == MOSQ_ACL_WRITE){
			allowed = pn_acl_allows(username, 0, ed->topic, ed->access, ed->retain);
		}else{
			allowed = 0;
		}
	}
	if(!allowed && ed->access != MOSQ_ACL_READ){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "denied %s%s user=%s topic=%s",
				access_name(ed->access), ed->retain && ed->access == MOSQ_ACL_WRITE ? " (retained)" : "",
				loggable_user(username), safe(ed->topic, buf, sizeof(buf)));
	}
	return allowed ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

static void kick_expired(plugin_state *st, time_t now)
{
	pn_conn *expired[MAX_KICKS_PER_CHECK];
	char *ids[MAX_KICKS_PER_CHECK];
	size_t n, i, k = 0;

	n = pn_sessions_expired(st->sessions, (long long)now, st->token.leeway, expired, MAX_KICKS_PER_CHECK);
	for(i = 0; i < n; i++){
		pn_conn *c = expired[i];
		if(c->kick_attempts++ > 0){
			/* Kicked before and still here: the broker no longer knows it. Drop the record. */
			mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "dropping stale record user=%s",
					pn_conn_user(c));
			pn_sessions_remove(st->sessions, c->client);
			continue;
		}
		ids[k] = strdup(pn_conn_client_id(st->sessions, c));
		if(ids[k]){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "token expired, disconnecting user=%s client=%s",
					pn_conn_user(c), ids[k]);
			k++;
		}
	}
	/* Kicking fires DISCONNECT, which edits the table: kick only after the scan. */
	for(i = 0; i < k; i++){
		mosquitto_kick_client_by_clientid(ids[i], false);
		free(ids[i]);
	}
}

static int user_is_live(const char *user, void *ctx)
{
	plugin_state *st = ctx;
	return pn_sessions_count_other(st->sessions, user, "") > 0;
}

/* Revocation lines from the API's feed (a service connection only). */
static int on_control(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_control *ed = event_data;
	plugin_state *st = userdata;
	const pn_conn *conn = pn_sessions_find(st->sessions, ed->client);
	pn_rev_stats stats;
	(void)event;

	if(!conn || conn->departed || !conn->is_service){
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored revocations from a non-service client");
		return MOSQ_ERR_ACL_DENIED;
	}
	if(pn_rev_apply(st->revocations, ed->payload, ed->payloadlen, (long long)time(NULL),
				user_is_live, st, &stats)){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory applying revocations");
		return MOSQ_ERR_NOMEM;
	}
	if(stats.malformed || stats.full){
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "revocations: %zu malformed line(s), "
				"%zu dropped (max_revocations reached)", stats.malformed, stats.full);
	}
	if(stats.synced){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "revocations synced: %zu in force",
				pn_rev_size(st->revocations));
	}
	return MOSQ_ERR_SUCCESS;
}

/* A request id: 1..PICTURE_REQUEST_ID_MAX of [A-Za-z0-9_-] (echoed in JSON unescaped). */
static int valid_request_id(const void *payload, uint32_t len)
{
	const unsigned char *p = payload;
	uint32_t i;
	if(!p || len == 0 || len > PICTURE_REQUEST_ID_MAX) return 0;
	for(i = 0; i < len; i++){
		unsigned char c = p[i];
		if(!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')){
			return 0;
		}
	}
	return 1;
}

/* A service asks for the whole picture (payload: its request id); answered from the next TICK. */
static int on_picture_request(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_control *ed = event_data;
	plugin_state *st = userdata;
	const pn_conn *conn = pn_sessions_find(st->sessions, ed->client);
	const char *client_id = mosquitto_client_id(ed->client);
	picture_request *r = NULL;
	size_t i;
	(void)event;

	if(!conn || conn->departed || !conn->is_service || !client_id){
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a sessions request from a non-service client");
		return MOSQ_ERR_ACL_DENIED;
	}
	if(!valid_request_id(ed->payload, ed->payloadlen)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a sessions request with an invalid "
				"request id (1..%d of A-Z a-z 0-9 _ -)", PICTURE_REQUEST_ID_MAX);
		return MOSQ_ERR_SUCCESS; /* an error here would disconnect the service */
	}
	for(i = 0; i < st->request_count; i++){
		if(!strcmp(st->requests[i].client_id, client_id)) r = &st->requests[i]; /* the newest wins */
	}
	if(!r){
		if(st->request_count == PICTURE_MAX_REQUESTS){
			mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "sessions request from %s dropped: "
					"%d requests already waiting", client_id, PICTURE_MAX_REQUESTS);
			return MOSQ_ERR_SUCCESS; /* the requester asks again when no answer comes */
		}
		r = &st->requests[st->request_count];
		r->client_id = strdup(client_id);
		if(!r->client_id) return MOSQ_ERR_NOMEM;
		st->request_count++;
	}
	memcpy(r->request_id, ed->payload, ed->payloadlen);
	r->request_id[ed->payloadlen] = '\0';
	return MOSQ_ERR_SUCCESS;
}

static void emit_part(const char *json, size_t len, void *ctx)
{
	const char *client_id = ctx;
	int rc = mosquitto_broker_publish_copy(client_id, PICTURE_TOPIC, (int)len, json, 1, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "could not send the sessions picture to %s (error %d)",
				client_id, rc);
	}
}

/* Answers the waiting requests: each requester gets the picture as of now, in parts. */
static void send_pictures(plugin_state *st, time_t now)
{
	size_t i;
	long parts;
	for(i = 0; i < st->request_count; i++){
		picture_request *r = &st->requests[i];
		parts = pn_sessions_snapshot_all(st->sessions, st->boot_id, r->request_id, ++st->seq, (long long)now,
				PICTURE_MAX_PARTS, PICTURE_MIN_USERS_PER_PART, emit_part, r->client_id);
		if(parts < 0){
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory building the sessions picture "
					"for %s; it will ask again", r->client_id);
		}else{
			mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "sessions picture for %s: %zu users in %ld part(s)",
					r->client_id, pn_sessions_online_users(st->sessions), parts);
		}
		free(r->client_id);
		r->client_id = NULL;
	}
	st->request_count = 0;
}

static void kick_revoked(plugin_state *st, time_t now)
{
	char *users[MAX_KICKS_PER_CHECK];
	size_t n = pn_rev_take_kicks(st->revocations, users, MAX_KICKS_PER_CHECK), i;
	for(i = 0; i < n; i++){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "revocation: disconnecting user=%s", users[i]);
		mosquitto_kick_client_by_username(users[i], false);
		free(users[i]);
	}
	if(now >= st->next_revocation_prune){
		st->next_revocation_prune = now + REVOCATION_PRUNE_SECONDS;
		pn_rev_prune(st->revocations, (long long)now);
	}
}

static int on_tick(int event, void *event_data, void *userdata)
{
	plugin_state *st = userdata;
	time_t now = time(NULL);
	(void)event;
	(void)event_data;

	pn_sessions_reap(st->sessions);
	kick_revoked(st, now);
	if(now >= st->next_expiry_check){
		st->next_expiry_check = now + st->expiry_interval;
		kick_expired(st, now);
	}
	/* Connections that reached this point either completed CONNECT or already disconnected. */
	if(pn_sessions_pending(st->sessions)){
		/* At most FLUSH_SECONDS apart: a burst becomes a few changes messages, not one per pass. */
		if(since_flush(st) >= FLUSH_SECONDS){
			clock_gettime(CLOCK_MONOTONIC, &st->last_flush);
			pn_sessions_flush(st->sessions, st->boot_id, &st->seq, (long long)now, snapshot_budget(st),
					emit_snapshot, st);
			send_changes(st); /* before any picture: its seq is higher than every change in it */
		}
	}else{
		snapshot_budget(st); /* keeps the bucket's clock current */
	}
	if(st->request_count) send_pictures(st, now);
	if(now >= st->next_stats){
		st->next_stats = now + st->stats_interval;
		if(st->stats_dirty) publish_stats(st, now);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	plugin_state *st = userdata;
	const pn_conn *conn = pn_sessions_find(st->sessions, ed->client);
	(void)event;
	if(conn && !conn->departed){
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "disconnected user=%s client=%s",
				pn_conn_user(conn), pn_conn_client_id(st->sessions, conn));
		/* Kept (not counted) until the next TICK: the Will's WRITE check comes right after. */
		pn_sessions_depart(st->sessions, ed->client);
	}
	return MOSQ_ERR_SUCCESS;
}

/* ------------------------------------------------------------------ options */

typedef struct options {
	pn_config_input token;
	const char *max_connections;
	const char *expiry_interval;
	const char *stats_interval;
	const char *revocation_sync_timeout;
	const char *max_revocations;
	const char *snapshot_rate;
} options;

static int parse_int_opt(const char *name, const char *value, long min, long max, long dflt, long *out)
{
	char *end;
	long v;
	if(!value){
		*out = dflt;
		return 0;
	}
	errno = 0;
	v = strtol(value, &end, 10);
	if(errno || !*value || *end || v < min || v > max){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_%s \"%s\" must be an integer %ld..%ld",
				name, value, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int read_options(struct mosquitto_opt *opts, int count, options *o)
{
	struct { const char *name; const char **slot; } known[] = {
		{"jwt_alg", &o->token.alg},
		{"jwt_secret", &o->token.secret},
		{"jwt_secret_file", &o->token.secret_file},
		{"jwt_public_key_file", &o->token.public_key_file},
		{"audience", &o->token.audience},
		{"issuer", &o->token.issuer},
		{"leeway", &o->token.leeway},
		{"max_token_bytes", &o->token.max_token_bytes},
		{"max_connections_per_user", &o->max_connections},
		{"expiry_check_interval", &o->expiry_interval},
		{"stats_interval", &o->stats_interval},
		{"revocation_sync_timeout", &o->revocation_sync_timeout},
		{"max_revocations", &o->max_revocations},
		{"snapshots_per_second", &o->snapshot_rate},
	};
	int i;
	size_t k;

	memset(o, 0, sizeof(*o));
	for(i = 0; i < count; i++){
		for(k = 0; k < sizeof(known) / sizeof(known[0]); k++){
			if(!strcmp(opts[i].key, known[k].name)) break;
		}
		if(k == sizeof(known) / sizeof(known[0])){
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "unknown option plugin_opt_%s (typo?); "
					"known: jwt_alg, jwt_secret, jwt_secret_file, jwt_public_key_file, audience, "
					"issuer, leeway, max_token_bytes, max_connections_per_user, expiry_check_interval, "
					"stats_interval, snapshots_per_second, revocation_sync_timeout, max_revocations",
					opts[i].key);
			return -1;
		}
		if(*known[k].slot){
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_%s is given twice", opts[i].key);
			return -1;
		}
		*known[k].slot = opts[i].value ? opts[i].value : "";
	}
	return 0;
}

/* ------------------------------------------------------------------ lifecycle */

static const struct { int event; MOSQ_FUNC_generic_callback cb; const char *topic; } EVENTS[] = {
	{MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL},
	{MOSQ_EVT_EXT_AUTH_START, on_ext_auth, NULL},
	{MOSQ_EVT_ACL_CHECK, on_acl_check, NULL},
	{MOSQ_EVT_TICK, on_tick, NULL},
	{MOSQ_EVT_DISCONNECT, on_disconnect, NULL},
	{MOSQ_EVT_CONTROL, on_control, REVOCATIONS_TOPIC},
	{MOSQ_EVT_CONTROL, on_picture_request, PICTURE_REQUEST_TOPIC},
};
#define EVENT_COUNT ((int)(sizeof(EVENTS) / sizeof(EVENTS[0])))

/* The one cleanup path: init failures and broker shutdown both end here. */
static void state_free(plugin_state *st)
{
	int i;
	if(!st) return;
	for(i = 0; i < EVENT_COUNT; i++){
		if(st->registered & (1 << i)){
			mosquitto_callback_unregister(st->id, EVENTS[i].event, EVENTS[i].cb, EVENTS[i].topic);
		}
	}
	for(i = 0; i < (int)st->request_count; i++) free(st->requests[i].client_id);
	free(st->changes.text);
	pn_sessions_free(st->sessions);
	pn_rev_free(st->revocations);
	pn_config_free(&st->token);
	free(st);
}

PN_EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

PN_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	plugin_state *st;
	options o;
	long max_conn, interval, stats_interval, snapshot_rate, sync_timeout, max_revocations;
	char err[512];
	char boot[128];
	int i;

	st = calloc(1, sizeof(*st));
	if(!st){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory");
		return MOSQ_ERR_NOMEM;
	}
	st->id = identifier;

	if(read_options(opts, opt_count, &o)
			|| parse_int_opt("max_connections_per_user", o.max_connections, 1, 100000, 5, &max_conn)
			|| parse_int_opt("expiry_check_interval", o.expiry_interval, 1, 3600, 2, &interval)
			|| parse_int_opt("stats_interval", o.stats_interval, 1, 3600, 5, &stats_interval)
			|| parse_int_opt("snapshots_per_second", o.snapshot_rate, 10, 1000000, 2000, &snapshot_rate)
			|| parse_int_opt("revocation_sync_timeout", o.revocation_sync_timeout, 0, 3600, 0, &sync_timeout)
			|| parse_int_opt("max_revocations", o.max_revocations, 1000, 100000000, 1000000, &max_revocations)){
		goto fail;
	}
	st->max_connections = (int)max_conn;
	st->expiry_interval = interval;
	st->stats_interval = stats_interval;
	st->snapshot_rate = snapshot_rate;
	st->snapshot_tokens = (double)snapshot_rate / 10.0;
	clock_gettime(CLOCK_MONOTONIC, &st->last_flush);
	st->bucket_at = st->last_flush;
	st->stats_dirty = 1; /* the first TICK publishes zeros for the new boot id */
	st->revocation_sync_timeout = sync_timeout;
	st->started = time(NULL);

	if(pn_config_load(&st->token, &o.token, err, sizeof(err))){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "invalid configuration: %s", err);
		goto fail;
	}
	st->sessions = pn_sessions_new(client_id_of);
	if(!st->sessions || new_boot_id(st->boot_id)
			|| !(st->revocations = pn_rev_new((size_t)max_revocations, st->boot_id))){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot initialise (memory or getrandom)");
		goto fail;
	}
	for(i = 0; i < EVENT_COUNT; i++){
		if(mosquitto_callback_register(identifier, EVENTS[i].event, EVENTS[i].cb, EVENTS[i].topic, st)
				!= MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot register event %d", EVENTS[i].event);
			goto fail;
		}
		st->registered |= 1 << i;
	}

	/* A new boot id tells services every earlier session snapshot is stale. */
	snprintf(boot, sizeof(boot), "{\"bootId\":\"%s\",\"startedAt\":%lld}", st->boot_id, (long long)time(NULL));
	publish_retained(BOOT_TOPIC, boot);

	mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "loaded: alg=%s audience=%s issuer=%s leeway=%lds "
			"max_token_bytes=%zu max_connections_per_user=%d expiry_check_interval=%lds "
			"snapshots_per_second=%ld boot=%s",
			pn_alg_name(st->token.alg), st->token.audience, st->token.issuer ? st->token.issuer : "(unchecked)",
			st->token.leeway, st->token.max_token_bytes, st->max_connections, st->expiry_interval,
			st->snapshot_rate, st->boot_id);
	*userdata = st;
	return MOSQ_ERR_SUCCESS;

fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "not loaded; the broker cannot start without it");
	state_free(st);
	return MOSQ_ERR_INVAL;
}

PN_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)opts;
	(void)opt_count;
	state_free(userdata);
	return MOSQ_ERR_SUCCESS;
}
