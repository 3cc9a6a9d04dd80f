/*
 * Cost of the plugin's per-connection bookkeeping at a given size (default 19,000 live
 * connections): add, find, the expiry check with 0 and with k expiring records, and, for
 * comparison, what a check costs that visits every record (the scan this replaced).
 * `make bench-sessions [CONNECTIONS=19000]`; prints one line per measurement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sessions.h"

typedef struct { char id[32]; } client;

static const char *client_id(const void *c) { return ((const client *)c)->id; }

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void noop_emit(const char *user, const char *json, void *ctx)
{
	(void)user; (void)json;
	(*(size_t *)ctx)++;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? (size_t)atol(argv[1]) : 19000, i, k, found = 0, emitted = 0;
	client *clients = calloc(n, sizeof(*clients));
	pn_conn **out = calloc(n, sizeof(*out));
	pn_sessions *s = pn_sessions_new(client_id);
	unsigned long long seq = 0;
	long long base = 1000000;
	double t0, t1;
	int rounds = 1000, r;
	volatile size_t sink = 0;

	if(!clients || !out || !s) return 1;
	for(i = 0; i < n; i++) snprintf(clients[i].id, sizeof(clients[i].id), "user%zu", i);

	t0 = now_ns();
	for(i = 0; i < n; i++){
		/* exp spread over an hour, like tokens issued over time */
		if(pn_sessions_add(s, &clients[i], clients[i].id, base + (long long)((i * 7919) % 3600), 0)) return 1;
	}
	t1 = now_ns();
	printf("connections %zu: add %.0f ns per connection\n", n, (t1 - t0) / (double)n);

	t0 = now_ns();
	for(r = 0; r < rounds; r++){
		for(i = 0; i < n; i += 97) found += pn_sessions_find(s, &clients[i]) != NULL;
	}
	t1 = now_ns();
	printf("connections %zu: find %.0f ns\n", n, (t1 - t0) / (double)found);

	t0 = now_ns();
	pn_sessions_flush(s, "boot", &seq, base, (size_t)-1, noop_emit, &emitted);
	t1 = now_ns();
	printf("connections %zu: first snapshots %.0f ns per user (%zu)\n", n, (t1 - t0) / (double)emitted, emitted);

	for(k = 0; k <= 100; k += 10){
		/* limit such that exactly the first k seconds' worth expire: find it by counting */
		long long limit = base - 1;
		size_t got;
		if(k){
			while(pn_sessions_expired(s, limit + 1, 0, out, n) < k) limit++;
		}
		t0 = now_ns();
		for(r = 0; r < rounds; r++) sink += pn_sessions_expired(s, limit, 0, out, n);
		t1 = now_ns();
		got = pn_sessions_expired(s, limit, 0, out, n);
		printf("connections %zu: expiry check with %zu expiring: %.0f ns\n", n, got, (t1 - t0) / rounds);
	}

	/* The replaced check: visit every live record and compare its exp. */
	t0 = now_ns();
	for(r = 0; r < rounds; r++){
		size_t e = 0;
		for(i = 0; i < n; i++){
			const pn_conn *c = pn_sessions_find(s, &clients[i]);
			if(c && base - 1 >= c->exp) e++;
		}
		sink += e;
	}
	t1 = now_ns();
	printf("connections %zu: a scan of every record (the old check) %.0f ns\n", n, (t1 - t0) / rounds);

	t0 = now_ns();
	for(i = 0; i < n; i++) pn_sessions_depart(s, &clients[i]);
	pn_sessions_reap(s);
	emitted = 0;
	pn_sessions_flush(s, "boot", &seq, base, (size_t)-1, noop_emit, &emitted);
	t1 = now_ns();
	printf("connections %zu: all disconnect + offline snapshots %.0f ns per connection\n", n, (t1 - t0) / (double)n);
	printf("users left %zu, live %zu\n", pn_sessions_users(s), pn_sessions_size(s));
	pn_sessions_free(s);
	free(clients);
	free(out);
	return (int)(sink == (size_t)-1);
}
