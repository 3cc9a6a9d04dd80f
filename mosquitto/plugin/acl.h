/*
 * Topic rights (CONTRACT.md §2), with no Mosquitto includes. Access values equal Mosquitto's
 * MOSQ_ACL_* so the glue passes them through unchanged.
 *
 * user role: SUBSCRIBE only filters inside users/{user}/ (wildcards inside are fine), no
 *            $share/..., no #, +/..., $SYS, plantnotify/...; READ only topics inside
 *            users/{user}/; WRITE only users/{user}/receipts and never retained.
 * service role: everything.
 */
#ifndef PLANTNOTIFY_ACL_H
#define PLANTNOTIFY_ACL_H

#define PN_ACCESS_READ 0x01
#define PN_ACCESS_WRITE 0x02
#define PN_ACCESS_SUBSCRIBE 0x04
#define PN_ACCESS_UNSUBSCRIBE 0x08

/* 1 when `user` (a valid user id) with the given role may do `access` on topic/filter. */
int pn_acl_allows(const char *user, int is_service, const char *topic, int access, int retain);

/*
 * For a shared-subscription filter "$share/<group>/<filter>", the <filter> part; the input
 * itself when it is not a shared subscription; NULL when it is a malformed $share filter.
 */
const char *pn_strip_share(const char *filter);

#endif
