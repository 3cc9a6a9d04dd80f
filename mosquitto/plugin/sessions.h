/*
 * Live-connection bookkeeping, with no Mosquitto includes.
 *
 * A record is keyed by the broker's client pointer: added when BASIC_AUTH succeeds (replacing
 * any record for that pointer), marked departed when DISCONNECT fires for it. Mosquitto 2.0.11
 * fires DISCONNECT for every context it tears down — refused, failed after authentication,
 * taken over, kicked — so no record outlives its connection; a take-over authenticates the new
 * context before it disconnects the old one, so counts exclude records with the same client id.
 * A departed record no longer counts anywhere but still answers "who is this client" until the
 * next TICK reaps it: Mosquitto sends a client's Will (WRITE check) right after DISCONNECT.
 *
 * Memory: a record holds only what is checked later (the client pointer, its user, exp, role);
 * the user id is stored once per user, in a record sized to it, shared by that user's
 * connections and freed with the last of them; client ids are not copied (the broker has them:
 * the table asks `client_id_of` for a live record's id). Expiry uses a min-heap on exp, so a
 * check costs O(log n) per record that expires, not a scan of every connection.
 *
 * Users whose set of live client ids changed are queued (once each, in order); the plugin
 * publishes their SessionSnapshots (not retained: the broker keeps nothing per user) from TICK,
 * at most a budget per TICK, so thousands of connections dropping at once become a steady
 * trickle of snapshots (one per user, however often it changed meanwhile) instead of a burst
 * that delays everyone else's messages. The whole picture is built on request
 * (pn_sessions_snapshot_all): every online user in a bounded number of parts.
 */
#ifndef PLANTNOTIFY_SESSIONS_H
#define PLANTNOTIFY_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"

typedef struct pn_sessions pn_sessions;
typedef struct pn_user pn_user;

/* The broker's client id of a live client pointer (mosquitto_client_id in the plugin). */
typedef const char *(*pn_client_id_fn)(const void *client);

typedef struct pn_conn {
	const void *client;
	pn_user *owner;            /* shared user record (pn_conn_user) */
	struct pn_conn *user_next; /* the user's live records, or the departed list */
	long long exp;
	uint32_t heap_index;       /* position in the expiry heap; PN_NOT_IN_HEAP when departed */
	uint8_t is_service;
	uint8_t departed;
	uint8_t kick_attempts;
} pn_conn;

#define PN_NOT_IN_HEAP UINT32_MAX

pn_sessions *pn_sessions_new(pn_client_id_fn client_id_of);
void pn_sessions_free(pn_sessions *s);

/* The record's user id (valid as long as the record). */
const char *pn_conn_user(const pn_conn *c);
/* The record's client id, asked from the broker: live (not departed) records only. */
const char *pn_conn_client_id(const pn_sessions *s, const pn_conn *c);

/* Live records of `user` whose client id is not `client_id` (a take-over replaces that one). */
int pn_sessions_count_other(const pn_sessions *s, const char *user, const char *client_id);
/* 1 when a live record with this client id belongs to a user other than `user`. */
int pn_sessions_client_id_owned_by_other(const pn_sessions *s, const char *user, const char *client_id);

/* 0 on success, -1 on out of memory. */
int pn_sessions_add(pn_sessions *s, const void *client, const char *user, long long exp, int is_service);
/* A live record's new expiry (re-authentication with a fresh token); 1 when there was one. */
int pn_sessions_set_exp(pn_sessions *s, const void *client, long long exp);
/* The connection ended: it stops counting now; the record is freed by pn_sessions_reap. */
int pn_sessions_depart(pn_sessions *s, const void *client);
/* Frees departed records. */
void pn_sessions_reap(pn_sessions *s);
/* Drops a record at once (1 when one was there). */
int pn_sessions_remove(pn_sessions *s, const void *client);
/* Live or departed-but-not-reaped record of this client, or NULL. */
pn_conn *pn_sessions_find(const pn_sessions *s, const void *client);
/* Live (not departed) records. */
size_t pn_sessions_size(const pn_sessions *s);
/* Users with a record (live, departed, waiting for their snapshot, or service users). */
size_t pn_sessions_users(const pn_sessions *s);
/* Users waiting for their snapshot. */
size_t pn_sessions_pending(const pn_sessions *s);

/* 1 when `user` has authenticated with role service since the plugin started. */
int pn_sessions_is_service_user(const pn_sessions *s, const char *user);

/*
 * Live records whose exp + leeway has passed (now >= exp + leeway), up to max, into out.
 * Cost: proportional to the records returned (a walk of the heap's expired top).
 */
size_t pn_sessions_expired(const pn_sessions *s, long long now, long leeway, pn_conn **out, size_t max);

/*
 * For up to `budget` queued users (oldest first): call emit(user, json, ctx) with the
 * SessionSnapshot JSON {"userId","bootId","connections","clientIds","seq","at"}; *seq is
 * incremented per snapshot. A user left with no connections gets the offline snapshot
 * (connections 0) — unless nobody was told it was online (it came and went between two flushes,
 * and no full picture named it): then nothing. Users left with no connections are forgotten
 * afterwards. Returns the number of snapshots emitted.
 */
typedef void (*pn_emit_fn)(const char *user, const char *json, void *ctx);
size_t pn_sessions_flush(pn_sessions *s, const char *boot_id, unsigned long long *seq, long long now,
		size_t budget, pn_emit_fn emit, void *ctx);

/* Users with at least one live connection that is announced (not a service's). */
size_t pn_sessions_online_users(const pn_sessions *s);

/*
 * The whole picture at once, for one requester: every online user's connections, in parts of
 * at least `min_users_per_part` users and at most `max_parts` parts (the part size grows with
 * the number of users instead), each part
 *   {"bootId","requestId","seq","at","part","parts","sessions":[{"userId","connections",
 *    "clientIds"}, ...]}
 * with part 1..parts; nobody online is one part with no sessions. All parts carry `seq`: the
 * picture is as of that point of the snapshot sequence (the caller takes a fresh seq for it).
 * Every part is built before emit(json, len, ctx) is called for any, and every user in it is
 * marked as told, so its going offline is announced. Returns the number of parts, or -1 (out
 * of memory: nothing emitted).
 */
typedef void (*pn_chunk_fn)(const char *json, size_t len, void *ctx);
long pn_sessions_snapshot_all(pn_sessions *s, const char *boot_id, const char *request_id,
		unsigned long long seq, long long now, size_t max_parts, size_t min_users_per_part,
		pn_chunk_fn emit, void *ctx);

/*
 * SessionSnapshot JSON for one user into buf (NUL-terminated); returns its length, or the
 * length it needs (>= buflen: call again with a bigger buffer), as snprintf does.
 */
size_t pn_sessions_snapshot(const pn_sessions *s, const char *user, const char *boot_id,
		unsigned long long seq, long long now, char *buf, size_t buflen);

#endif
