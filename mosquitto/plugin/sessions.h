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
 * Users whose set of live client ids changed are marked dirty; the plugin publishes one
 * SessionSnapshot per dirty user per TICK (after the connection either completed or failed).
 */
#ifndef PLANTNOTIFY_SESSIONS_H
#define PLANTNOTIFY_SESSIONS_H

#include <stddef.h>

#include "token.h"

typedef struct pn_sessions pn_sessions;

typedef struct pn_conn {
	const void *client;
	char user[PN_USER_ID_MAX + 1];
	char *client_id;
	long long exp;
	int is_service;
	int kick_attempts;
	int departed;
	/* private links */
	struct pn_conn *bucket_next;
	struct pn_conn *user_next;
	struct pn_conn *user_prev;
	struct pn_user *owner;
} pn_conn;

pn_sessions *pn_sessions_new(void);
void pn_sessions_free(pn_sessions *s);

/* Live records of `user` whose client id is not `client_id` (a take-over replaces that one). */
int pn_sessions_count_other(const pn_sessions *s, const char *user, const char *client_id);
/* 1 when a live record with this client id belongs to a user other than `user`. */
int pn_sessions_client_id_owned_by_other(const pn_sessions *s, const char *user, const char *client_id);

/* 0 on success, -1 on out of memory. */
int pn_sessions_add(pn_sessions *s, const void *client, const char *user, const char *client_id,
		long long exp, int is_service);
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

/* 1 when `user` has authenticated with role service since the plugin started. */
int pn_sessions_is_service_user(const pn_sessions *s, const char *user);

/*
 * Records whose exp + leeway has passed (now >= exp + leeway), up to max, into out.
 * Returns how many were written.
 */
size_t pn_sessions_expired(const pn_sessions *s, long long now, long leeway, pn_conn **out, size_t max);

/*
 * For each dirty (non-service) user: call emit(user, json, ctx) with the SessionSnapshot JSON
 * {"userId","bootId","connections","clientIds","seq","at"}; *seq is incremented per snapshot.
 * Users left with no connections are forgotten afterwards. Returns the number emitted.
 */
typedef void (*pn_emit_fn)(const char *user, const char *json, void *ctx);
size_t pn_sessions_flush(pn_sessions *s, const char *boot_id, unsigned long long *seq, long long now,
		pn_emit_fn emit, void *ctx);

/* SessionSnapshot JSON for one user (malloc'd; free()), as pn_sessions_flush emits it. */
char *pn_sessions_snapshot(const pn_sessions *s, const char *user, const char *boot_id,
		unsigned long long seq, long long now);

#endif
