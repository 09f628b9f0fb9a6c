import { useEffect, useState } from 'react';
import type { AttachmentView } from '../services/events';
import { useServices } from '../services/context';

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} o`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} Ko`;
  return `${(bytes / 1024 / 1024).toFixed(1)} Mo`;
}

/**
 * An attachment of a message. Downloads need the Authorization header, so the file is fetched
 * and shown from an object URL (images and audio at once, other files on demand).
 */
export function AttachmentPreview({ attachment, token }: { attachment: AttachmentView; token: string }) {
  const services = useServices();
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  const inline =
    attachment.content_type.startsWith('image/') || attachment.content_type.startsWith('audio/');

  useEffect(() => {
    if (!inline) return;
    let alive = true;
    let objectUrl: string | null = null;
    services
      .api(token)
      .downloadAttachment(attachment.url)
      .then((blob) => {
        if (!alive) return;
        objectUrl = URL.createObjectURL(blob);
        setUrl(objectUrl);
      })
      .catch(() => alive && setFailed(true));
    return () => {
      alive = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [attachment.url, inline, services, token]);

  const download = async () => {
    try {
      const blob = await services.api(token).downloadAttachment(attachment.url);
      const u = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = u;
      a.download = attachment.file_name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 10_000);
    } catch {
      setFailed(true);
    }
  };

  if (failed) return <span className="attachment attachment-error">Pièce jointe indisponible</span>;
  if (attachment.content_type.startsWith('image/')) {
    return url ? (
      <img className="attachment attachment-image" src={url} alt={attachment.file_name} />
    ) : (
      <span className="attachment">Chargement de l'image…</span>
    );
  }
  if (attachment.content_type.startsWith('audio/')) {
    return url ? (
      <audio className="attachment attachment-audio" controls src={url} />
    ) : (
      <span className="attachment">Chargement du message vocal…</span>
    );
  }
  return (
    <button type="button" className="attachment attachment-file link-button" onClick={download}>
      Télécharger {attachment.file_name} ({size(attachment.size_bytes)})
    </button>
  );
}
