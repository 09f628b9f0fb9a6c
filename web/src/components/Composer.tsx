import { useRef, useState, type FormEvent, type KeyboardEvent } from 'react';

export interface ComposerProps {
  onSend(text: string): Promise<void> | void;
  onFile?(file: File): Promise<void> | void;
  onTyping?(): void;
  disabled?: boolean;
  compact?: boolean;
}

/** The text box, send button and attachment picker. Enter sends, Shift+Enter starts a line. */
export function Composer({ onSend, onFile, onTyping, disabled, compact }: ComposerProps) {
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const fileInput = useRef<HTMLInputElement | null>(null);

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    const value = text.trim();
    if (!value) return;
    setText('');
    await onSend(value);
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      void submit();
    }
  };

  const pick = async (files: FileList | null) => {
    const file = files?.[0];
    if (!file || !onFile) return;
    setBusy(true);
    try {
      await onFile(file);
    } finally {
      setBusy(false);
      if (fileInput.current) fileInput.current.value = '';
    }
  };

  return (
    <form className={`chat-composer${compact ? ' compact' : ''}`} onSubmit={submit}>
      {onFile && (
        <>
          <button
            type="button"
            className="chat-attach icon-button"
            title="Joindre un fichier"
            aria-label="Joindre un fichier"
            disabled={disabled || busy}
            onClick={() => fileInput.current?.click()}
          >
            Joindre
          </button>
          <input
            ref={fileInput}
            type="file"
            className="chat-file-input"
            hidden
            accept="image/*,audio/*,application/pdf,.doc,.docx,.odt,.txt"
            onChange={(e) => void pick(e.target.files)}
          />
        </>
      )}
      <textarea
        className="chat-input"
        rows={compact ? 1 : 2}
        placeholder="Votre message…"
        aria-label="Votre message"
        value={text}
        disabled={disabled}
        onChange={(e) => {
          setText(e.target.value);
          onTyping?.();
        }}
        onKeyDown={onKey}
      />
      <button type="submit" className="chat-send primary" disabled={disabled || !text.trim()}>
        Envoyer
      </button>
    </form>
  );
}
