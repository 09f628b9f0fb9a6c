import { useEffect, useRef, useState } from 'react';

export interface VideoTileProps {
  stream: MediaStream | null;
  label: string;
  /** Our own preview: muted (no echo) and mirrored. */
  local?: boolean;
  className?: string;
  streamId?: string;
  placeholder?: string;
  /** Shown over the picture (*Audio seulement*). */
  badge?: string;
}

/**
 * One video. A remote one plays with sound; if the browser's autoplay policy refuses sound
 * before any click, it plays muted and offers a button to turn the sound on.
 */
export function VideoTile({ stream, label, local, className, streamId, placeholder, badge }: VideoTileProps) {
  const ref = useRef<HTMLVideoElement | null>(null);
  const [needsUnmute, setNeedsUnmute] = useState(false);

  useEffect(() => {
    const v = ref.current;
    if (!v) return;
    if (v.srcObject !== stream) v.srcObject = stream;
    if (!stream) return;
    const p = v.play?.();
    if (p && typeof p.catch === 'function') {
      p.catch((e: { name?: string }) => {
        if (local || e?.name !== 'NotAllowedError') return;
        v.muted = true;
        setNeedsUnmute(true);
        void v.play().catch(() => undefined);
      });
    }
  }, [stream, local]);

  const unmute = () => {
    const v = ref.current;
    if (!v) return;
    v.muted = false;
    void v.play().catch(() => undefined);
    setNeedsUnmute(false);
  };

  return (
    <figure className={`video-tile ${local ? 'local' : 'remote'} ${className ?? ''}`} data-stream-id={streamId}>
      <video
        ref={ref}
        className={local ? 'local-video' : 'remote-video'}
        autoPlay
        playsInline
        muted={local}
        data-stream-id={streamId}
      />
      {!stream && <div className="video-placeholder">{placeholder ?? 'Pas de vidéo'}</div>}
      {badge && (
        <div className="video-badge" data-badge={badge}>
          {badge}
        </div>
      )}
      <figcaption>{label}</figcaption>
      {needsUnmute && (
        <button type="button" className="unmute-remote primary" onClick={unmute}>
          Activer le son
        </button>
      )}
    </figure>
  );
}
