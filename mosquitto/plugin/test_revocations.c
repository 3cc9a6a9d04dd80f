/*
 * C unit tests for revocations.c (run by `make test`, built with ASan+UBSan).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "revocations.h"

static int g_checks, g_failures;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)

static void check(int ok, const char *what, const char *file, int line)
{
	g_checks++;
	if(!ok){
		g_failures++;
		fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
	}
}

static const long long NOW = 1800000000LL;

static int apply(pn_revocations *r, const char *payload, pn_rev_stats *st)
{
	return pn_rev_apply(r, payload, strlen(payload), NOW, NULL, NULL, st);
}

static size_t drain(pn_revocations *r, const char *expect_first)
{
	char *kicks[16];
	size_t n = pn_rev_take_kicks(r, kicks, 16), i;
	if(expect_first) CHECK(n > 0 && !strcmp(kicks[0], expect_first));
	for(i = 0; i < n; i++) free(kicks[i]);
	return n;
}

static void test_session_revocation(void)
{
	pn_revocations *r = pn_rev_new(0, "boot1");
	pn_rev_stats st;
	CHECK(r != NULL);
	CHECK(!pn_rev_is_revoked(r, "alice", "0123abcd", NOW - 10, NOW));
	CHECK(apply(r, "S alice 0123abcd 1800000100\n", &st) == 0);
	CHECK(st.applied == 1 && st.malformed == 0);
	CHECK(pn_rev_is_revoked(r, "alice", "0123abcd", NOW - 10, NOW));
	CHECK(pn_rev_is_revoked(r, "alice", "0123abcd", NOW + 50, NOW)); /* any iat */
	CHECK(!pn_rev_is_revoked(r, "alice", "ffff0000", NOW - 10, NOW)); /* another device */
	CHECK(!pn_rev_is_revoked(r, "bob", "0123abcd", NOW - 10, NOW));   /* sid of another user */
	CHECK(!pn_rev_is_revoked(r, "alice", NULL, NOW - 10, NOW));
	CHECK(!pn_rev_is_revoked(r, "alice", "", NOW - 10, NOW));
	/* forgotten once until has passed */
	CHECK(!pn_rev_is_revoked(r, "alice", "0123abcd", NOW - 10, 1800000100LL));
	CHECK(drain(r, "alice") == 1);
	CHECK(drain(r, NULL) == 0);
	/* the same line again changes nothing: no second kick */
	CHECK(apply(r, "S alice 0123abcd 1800000100", &st) == 0);
	CHECK(drain(r, NULL) == 0);
	CHECK(pn_rev_size(r) == 1);
	pn_rev_prune(r, 1800000100LL);
	CHECK(pn_rev_size(r) == 0);
	pn_rev_free(r);
}

static void test_user_revocation(void)
{
	pn_revocations *r = pn_rev_new(0, "boot1");
	pn_rev_stats st;
	CHECK(apply(r, "U bob 1800000000 1800009999\r\n", &st) == 0 && st.applied == 1);
	CHECK(pn_rev_is_revoked(r, "bob", "aa", NOW - 1, NOW));  /* issued before: refused */
	CHECK(pn_rev_is_revoked(r, "bob", NULL, NOW - 1, NOW));
	CHECK(pn_rev_is_revoked(r, "bob", NULL, -1, NOW));       /* unknown iat: refused */
	CHECK(!pn_rev_is_revoked(r, "bob", NULL, NOW, NOW));     /* issued at/after: a new login */
	CHECK(!pn_rev_is_revoked(r, "bob", "aa", NOW + 5, NOW));
	/* a later not-before moves it forward; an earlier one never moves it back */
	CHECK(apply(r, "U bob 1800000050 1800009999", &st) == 0);
	CHECK(pn_rev_is_revoked(r, "bob", NULL, NOW + 10, NOW));
	CHECK(apply(r, "U bob 1700000000 1800009999", &st) == 0);
	CHECK(pn_rev_is_revoked(r, "bob", NULL, NOW + 10, NOW));
	CHECK(pn_rev_size(r) == 1);
	pn_rev_free(r);
}

static void test_malformed_lines_are_skipped(void)
{
	pn_revocations *r = pn_rev_new(0, "boot1");
	pn_rev_stats st;
	const char *payload =
		"S alice/x sid 1800000100\n"       /* bad user */
		"S alice s+d 1800000100\n"         /* bad sid */
		"S alice sid\n"                    /* too few fields */
		"S alice sid 1800000100 extra\n"   /* too many */
		"S  alice sid 1800000100\n"        /* double space */
		"X alice sid 1800000100\n"         /* unknown kind */
		"U alice soon 1800000100\n"        /* bad not-before */
		"U alice 1 -5\n"                   /* bad until */
		"S alice sid 99999999999999999\n"  /* absurd until */
		"S alice old 1700000000\n"         /* already expired */
		"\n\n"
		"S carol ok 1800000100";           /* fine, no final newline */
	CHECK(apply(r, payload, &st) == 0);
	CHECK(st.applied == 1);
	CHECK(st.malformed == 9);
	CHECK(st.expired == 1);
	CHECK(pn_rev_size(r) == 1);
	CHECK(!pn_rev_is_revoked(r, "alice", "sid", NOW - 1, NOW));
	CHECK(pn_rev_is_revoked(r, "carol", "ok", NOW - 1, NOW));
	/* an over-long id is refused, not truncated */
	{
		char line[256];
		memset(line, 0, sizeof(line));
		strcpy(line, "S ");
		memset(line + 2, 'a', 65);
		strcat(line, " sid 1800000100");
		CHECK(apply(r, line, &st) == 0 && st.malformed == 1);
	}
	/* NUL bytes inside the payload end nothing early and match nothing */
	{
		static const char with_nul[] = "S dave s1 1800000100\nS da\0ve s2 1800000100\nS erin s3 1800000100";
		CHECK(pn_rev_apply(r, with_nul, sizeof(with_nul) - 1, NOW, NULL, NULL, &st) == 0);
		CHECK(st.applied == 2 && st.malformed == 1);
		CHECK(pn_rev_is_revoked(r, "erin", "s3", NOW - 1, NOW));
	}
	drain(r, NULL);
	pn_rev_free(r);
}

static void test_sync_needs_our_boot_id(void)
{
	pn_revocations *r = pn_rev_new(0, "b00t");
	pn_rev_stats st;
	CHECK(!pn_rev_synced(r));
	CHECK(apply(r, "SYNC other", &st) == 0 && !st.synced);
	CHECK(!pn_rev_synced(r));
	CHECK(apply(r, "S a s 1800000100\nSYNC b00t\n", &st) == 0 && st.synced);
	CHECK(pn_rev_synced(r));
	drain(r, NULL);
	pn_rev_free(r);
}

static int only_live_alice(const char *user, void *ctx)
{
	(*(int *)ctx)++;
	return !strcmp(user, "alice");
}

static void test_kicks_only_live_users_once(void)
{
	pn_revocations *r = pn_rev_new(0, "boot1");
	pn_rev_stats st;
	int calls = 0;
	const char *p = "S alice s1 1800000100\nS bob s2 1800000100\nS alice s3 1800000100\n";
	CHECK(pn_rev_apply(r, p, strlen(p), NOW, only_live_alice, &calls, &st) == 0);
	CHECK(calls == 3);
	CHECK(drain(r, "alice") == 1); /* bob has no connection; alice queued once */
	pn_rev_free(r);
}

static void test_bounded_and_growing(void)
{
	pn_revocations *r = pn_rev_new(1000, "boot1");
	pn_rev_stats st;
	char line[96];
	int i;
	for(i = 0; i < 1500; i++){
		snprintf(line, sizeof(line), "S u%d s%d %lld", i, i, NOW + 100 + (i < 500 ? 0 : 1000));
		CHECK(apply(r, line, &st) == 0);
		drain(r, NULL);
	}
	CHECK(pn_rev_size(r) == 1000);
	CHECK(pn_rev_is_revoked(r, "u999", "s999", NOW - 1, NOW));
	CHECK(!pn_rev_is_revoked(r, "u1200", "s1200", NOW - 1, NOW)); /* dropped: full */
	/* once the first 500 expire, room is made by pruning */
	CHECK(pn_rev_apply(r, "S late s 1800009999", 19, NOW + 200, NULL, NULL, &st) == 0);
	CHECK(st.applied == 1 && st.full == 0);
	CHECK(pn_rev_size(r) == 501);
	drain(r, NULL);
	pn_rev_free(r);
}

int main(void)
{
	test_session_revocation();
	test_user_revocation();
	test_malformed_lines_are_skipped();
	test_sync_needs_our_boot_id();
	test_kicks_only_live_users_once();
	test_bounded_and_growing();
	printf("test_revocations: %d checks, %d failures\n", g_checks, g_failures);
	return g_failures ? 1 : 0;
}
