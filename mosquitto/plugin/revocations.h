/*
 * Revoked tokens, with no Mosquitto includes (unit-tested in test_revocations.c).
 *
 * The API's revocation feed (api/revocation_feed.py) publishes lines on
 * plantnotify/broker/revocations from a service connection; the plugin hands each payload to
 * pn_rev_apply. The database is the source of truth: after every broker boot the feed sends
 * every revocation in force again, then "SYNC <bootId>".
 *
 *   S <userId> <sessionId> <until>   tokens carrying this sid (a login session) are refused
 *   U <userId> <notBefore> <until>   tokens of this user with iat < notBefore are refused
 *   SYNC <bootId>                    everything in force has been sent to this boot
 *
 * Times are unix seconds; an entry is forgotten once now >= until. Ids use the user-id
 * alphabet [A-Za-z0-9_-]{1,64}. A malformed line is skipped (and counted); the others apply.
 * Every applied S/U line queues its user for a kick (pn_rev_take_kicks): their live
 * connections are closed, and those whose token is not revoked reconnect.
 */
#ifndef PLANTNOTIFY_REVOCATIONS_H
#define PLANTNOTIFY_REVOCATIONS_H

#include <stddef.h>

#define PN_REV_ID_MAX 64
#define PN_REV_BOOT_MAX 64

typedef struct pn_revocations pn_revocations;

typedef struct pn_rev_stats {
	size_t applied;    /* S/U lines stored or updated */
	size_t malformed;  /* lines skipped as malformed */
	size_t expired;    /* lines already past their until */
	size_t full;       /* lines dropped: max_entries reached (logged by the caller) */
	int synced;        /* a SYNC line for our boot id was seen */
} pn_rev_stats;

/* max_entries bounds memory (~200 bytes per entry); 0 means a default of 1,000,000. */
pn_revocations *pn_rev_new(size_t max_entries, const char *boot_id);
void pn_rev_free(pn_revocations *r);

/*
 * Applies a payload (need not be NUL-terminated). A user named by an applied line is queued
 * for a kick when is_live(user, ctx) says they have live connections (NULL: always).
 * Returns 0, or -1 when out of memory.
 */
typedef int (*pn_rev_live_fn)(const char *user, void *ctx);
int pn_rev_apply(pn_revocations *r, const char *payload, size_t len, long long now,
		pn_rev_live_fn is_live, void *ctx, pn_rev_stats *stats);

/*
 * 1 when a token of `user` with session id `sid` (NULL or "" when it carries none) issued at
 * `iat` (< 0 when unknown) is revoked at `now`. A user revocation refuses a token whose iat is
 * unknown.
 */
int pn_rev_is_revoked(const pn_revocations *r, const char *user, const char *sid, long long iat,
		long long now);

/* 1 once the feed confirmed this boot's full set (SYNC <bootId>). */
int pn_rev_synced(const pn_revocations *r);

/* Moves up to max queued users to kick into out (each malloc'd: free()). Returns how many. */
size_t pn_rev_take_kicks(pn_revocations *r, char **out, size_t max);

/* Forgets entries past their until. */
void pn_rev_prune(pn_revocations *r, long long now);

size_t pn_rev_size(const pn_revocations *r);

#endif
