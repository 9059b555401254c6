import ipaddr from 'ipaddr.js';

/**
 * What an address is, for deciding whether a webhook may be sent to it:
 * - `public`: a global unicast address; always allowed.
 * - `private`: loopback, RFC 1918, CGNAT (100.64/10), link-local, unique-local (fc00::/7); allowed
 *   only when private targets are (development, tests, a receiver on the same network).
 * - `forbidden`: never a receiver: cloud metadata services, unspecified, broadcast, multicast,
 *   reserved and documentation ranges, and transition forms (6to4, Teredo, IPv4-compatible) whose
 *   IPv4 end could be anything.
 */
export type AddressClass = { kind: 'public' } | { kind: 'private' | 'forbidden'; description: string };

/**
 * Instance metadata services. They sit in link-local, CGNAT, reserved or unique-local space already;
 * naming them keeps them refused even where private targets are allowed: nothing legitimate
 * receives webhooks there, and they hand out cloud credentials.
 */
const METADATA_ADDRESSES = new Set([
  '169.254.169.254', // AWS, GCP, Azure, OpenStack, DigitalOcean, ...
  '169.254.170.2', // AWS ECS task metadata and credentials
  '169.254.169.123', // AWS time sync
  '169.254.0.23', // Tencent Cloud
  '100.100.100.200', // Alibaba Cloud
  '192.0.0.192', // Oracle Cloud
  'fd00:ec2::254', // AWS IMDS over IPv6
  'fd00:ec2::23', // AWS time sync over IPv6
  'fd20:ce::254', // GCP metadata over IPv6
]);

/** ipaddr.js range names whose addresses belong to a private network, with how to name them. */
const PRIVATE_RANGES: Record<string, string> = {
  loopback: 'a loopback address',
  private: 'a private (RFC 1918) address',
  carrierGradeNat: 'a shared (CGNAT, RFC 6598) address',
  linkLocal: 'a link-local address',
  uniqueLocal: 'a unique-local address',
};

/** NAT64's well-known prefix 64:ff9b::/96 (RFC 6052): the IPv4 address it reaches is the last 32 bits. */
const NAT64_PREFIX = ipaddr.IPv6.parse('64:ff9b::');
const IPV4_COMPATIBLE_PREFIX = ipaddr.IPv6.parse('::');

/**
 * Classifies an IP address in any notation ipaddr.js parses (dotted, IPv6, IPv4-mapped IPv6).
 * Throws for a string that is not an IP address.
 */
export function classifyAddress(address: string): AddressClass {
  const parsed = ipaddr.process(address);
  const canonical = parsed.toString();
  if (METADATA_ADDRESSES.has(canonical)) return { kind: 'forbidden', description: 'a cloud metadata address' };
  const range = parsed.range();
  if (parsed.kind() === 'ipv6') {
    const ipv6 = parsed as ipaddr.IPv6;
    // Reaches the embedded IPv4 address through a NAT64 gateway: judge that address.
    if (ipv6.match(NAT64_PREFIX, 96)) return classifyAddress(embeddedIpv4(ipv6).toString());
    // ::a.b.c.d (IPv4-compatible, deprecated): ipaddr.js calls it unicast, but a host with a
    // tunnel routes it to a.b.c.d.
    if (range === 'unicast' && ipv6.match(IPV4_COMPATIBLE_PREFIX, 96)) {
      return { kind: 'forbidden', description: 'an IPv4-compatible IPv6 address' };
    }
  }
  if (range === 'unicast') return { kind: 'public' };
  const privateDescription = PRIVATE_RANGES[range];
  if (privateDescription !== undefined) return { kind: 'private', description: privateDescription };
  return { kind: 'forbidden', description: `an address of the ${range} range` };
}

function embeddedIpv4(address: ipaddr.IPv6): ipaddr.IPv4 {
  const bytes = address.toByteArray().slice(12);
  return ipaddr.fromByteArray(bytes) as ipaddr.IPv4;
}
