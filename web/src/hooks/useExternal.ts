import { useEffect, useState, useSyncExternalStore } from 'react';
import type { ConsultationCall, CallSnapshot } from '../services/call';
import type { ConnectionStatus, SignalingService } from '../services/signalingService';

/** A call's snapshots as React state. */
export function useCallSnapshot(call: ConsultationCall | null): CallSnapshot | null {
  return useSyncExternalStore(
    (cb) => (call ? call.subscribe(cb) : () => undefined),
    () => (call ? call.getSnapshot() : null),
  );
}

/** The signaling connection's status as React state. */
export function useSignalingStatus(service: SignalingService): ConnectionStatus {
  const [status, setStatus] = useState<ConnectionStatus>(service.status);
  useEffect(() => {
    setStatus(service.status);
    return service.onStatus((s) => setStatus(s));
  }, [service]);
  return status;
}
