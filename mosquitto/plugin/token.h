/*
 * MQTT token verification and identity rules (CONTRACT.md §2), with no Mosquitto includes so
 * the C unit tests and the fuzz target link it alone.
 *
 * Everything happens here, with OpenSSL for the signature only: the algorithm is pinned from the
 * configuration, the header and payload are parsed strictly (duplicate keys refused), the
 * signature is checked with the configured key alone (decoded once, at load: an HS256 MAC
 * context keyed once, or the parsed RSA/EC public key), and exp/nbf/iat/aud/iss/sub/role are
 * validated with a small leeway. (libjwt 1.10.2, used before, parsed the PEM key and the JSON
 * again on every CONNECT and skipped the check for an empty key.)
 */
#ifndef PLANTNOTIFY_TOKEN_H
#define PLANTNOTIFY_TOKEN_H

#include <stddef.h>
#include <time.h>

#define PN_USER_ID_MAX 64
#define PN_CLIENT_SUFFIX_MAX 64
#define PN_MIN_HS256_SECRET 32
#define PN_DEFAULT_MAX_TOKEN_BYTES 4096
#define PN_MIN_MAX_TOKEN_BYTES 256
#define PN_MAX_MAX_TOKEN_BYTES 65535
#define PN_MAX_LEEWAY 60
#define PN_DEFAULT_AUDIENCE "plantnotify-mqtt"

typedef enum pn_alg {
	PN_ALG_HS256 = 1,
	PN_ALG_RS256 = 2,
	PN_ALG_ES256 = 3,
} pn_alg;

typedef enum pn_result {
	PN_OK = 0,
	PN_ERR_EMPTY,        /* no password / token */
	PN_ERR_TOO_LARGE,    /* over max_token_bytes, refused before any parsing */
	PN_ERR_MALFORMED,    /* not three base64url segments of JSON objects */
	PN_ERR_HEADER,       /* typ not JWT, crit, jku/jwk/x5u/x5c, bad kid */
	PN_ERR_ALG,          /* alg is not the configured one (none, confusion, ...) */
	PN_ERR_SIGNATURE,    /* the signature does not verify with the configured key */
	PN_ERR_DUPLICATE,    /* duplicate JSON key in header or claims */
	PN_ERR_EXP_MISSING,  /* no integer exp */
	PN_ERR_EXPIRED,      /* now >= exp + leeway */
	PN_ERR_NBF,          /* nbf in the future (beyond leeway) or not an integer */
	PN_ERR_IAT,          /* iat in the future (beyond leeway) or not an integer */
	PN_ERR_AUD,          /* aud missing or not the configured audience */
	PN_ERR_ISS,          /* iss missing or wrong while an issuer is configured */
	PN_ERR_SUB,          /* sub missing or not ^[A-Za-z0-9_-]{1,64}$ */
	PN_ERR_ROLE,         /* role present but not "service" or "user"; or sid not [A-Za-z0-9_-]{1,32} */
	PN_ERR_USERNAME,     /* username missing or not equal to sub */
	PN_ERR_CLIENT_ID,    /* client id not <sub> or <sub>-<suffix> */
	PN_ERR_NOMEM,
	PN_RESULT_COUNT
} pn_result;

/* Verifier configuration; built by pn_config_load, freed by pn_config_free. */
typedef struct pn_token_config {
	pn_alg alg;
	unsigned char *key; /* HS256 secret, or the public key PEM (RS256/ES256) */
	size_t key_len;
	void *mac;          /* HS256: EVP_MAC_CTX keyed once at load */
	void *pkey;         /* RS256/ES256: EVP_PKEY parsed once at load */
	void *md;           /* RS256/ES256: EVP_MD_CTX reused by every verification */
	unsigned char *scratch; /* max_token_bytes + 1: decoded segments (the broker is one thread) */
	char *audience;     /* required */
	char *issuer;       /* NULL: not checked */
	long leeway;        /* seconds, 0..PN_MAX_LEEWAY */
	size_t max_token_bytes;
} pn_token_config;

/* What the plugin asks for; strings may be NULL (unset). */
typedef struct pn_config_input {
	const char *alg;             /* "HS256" (default), "RS256", "ES256" */
	const char *secret;          /* HS256 secret (>= 32 bytes) */
	const char *secret_file;     /* or a file holding it (one trailing newline is dropped) */
	const char *public_key_file; /* RS256/ES256 public key PEM */
	const char *audience;        /* default PN_DEFAULT_AUDIENCE */
	const char *issuer;
	const char *leeway;          /* default "5" */
	const char *max_token_bytes; /* default "4096" */
} pn_config_input;

#define PN_SID_MAX 32

typedef struct pn_claims {
	char sub[PN_USER_ID_MAX + 1];
	char sid[PN_SID_MAX + 1]; /* login session id ([A-Za-z0-9_-]{1,32}); "" when absent */
	long long exp;
	long long iat;            /* -1 when absent */
	int is_service;
} pn_claims;

/* Returns 0 on success; otherwise -1 with a message for the log in err. */
int pn_config_load(pn_token_config *cfg, const pn_config_input *in, char *err, size_t errlen);
void pn_config_free(pn_token_config *cfg);

/*
 * Verify a token. `token` is NUL-terminated; at most cfg->max_token_bytes + 1 bytes are read
 * before a verdict on its size. On PN_OK, *out holds sub, exp and the role.
 */
pn_result pn_token_verify(const pn_token_config *cfg, const char *token, time_t now, pn_claims *out);
/* The same for a token given with its length (not NUL-terminated; NUL bytes are refused). */
pn_result pn_token_verify_len(const pn_token_config *cfg, const char *token, size_t len, time_t now,
		pn_claims *out);

/*
 * The whole CONNECT decision: token valid, username == sub, client id belongs to sub.
 * username and client_id may be NULL (refused).
 */
pn_result pn_check_connect(const pn_token_config *cfg, const char *username, const char *client_id,
		const char *token, time_t now, pn_claims *out);

/* The same for a token given with its length (MQTT 5 authentication data). */
pn_result pn_check_connect_len(const pn_token_config *cfg, const char *username, const char *client_id,
		const char *token, size_t token_len, time_t now, pn_claims *out);

/* ^[A-Za-z0-9_-]{1,64}$ (plantnotify/contracts/ids.py USER_ID_PATTERN). */
int pn_valid_user_id(const char *s);
/* client id == user, or user + "-" + [A-Za-z0-9_.:-]{1,64} (ids.py is_valid_client_id). */
int pn_valid_client_id(const char *user, const char *client_id);

const char *pn_result_str(pn_result r);
const char *pn_alg_name(pn_alg alg);

/* Strict base64url (no padding); returns decoded length or -1. out needs (len*3)/4+1 bytes. */
long pn_b64url_decode(const char *in, size_t len, unsigned char *out);

#endif
