import { useId, useState, type FormEvent } from "react";

import { tokenProblem } from "../auth";

interface Props {
  message: string | null;
  onSignIn: (token: string) => void;
}

export function SignIn({ message, onSignIn }: Props) {
  const [text, setText] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const fieldId = useId();
  const hintId = useId();
  const errorId = useId();
  const shown = problem ?? message;

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const token = text.trim();
    const why = tokenProblem(token);
    if (why !== null) {
      setProblem(why);
      return;
    }
    setProblem(null);
    onSignIn(token);
  };

  return (
    <div className="signin-page">
      <header className="app-header">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <h1>Realtime admin</h1>
        </div>
      </header>
      <main id="main" className="signin-main">
        <form className="card signin-card" onSubmit={submit} aria-labelledby={`${fieldId}-title`} noValidate>
          <h2 id={`${fieldId}-title`}>Sign in</h2>
          <div role="alert" aria-live="assertive" className="signin-message-slot">
            {shown && (
              <p className="signin-message" id={errorId} data-testid="signin-message">
                {shown}
              </p>
            )}
          </div>
          <label htmlFor={fieldId}>Access token</label>
          <textarea
            id={fieldId}
            name="token"
            rows={5}
            spellCheck={false}
            autoComplete="off"
            autoCapitalize="off"
            value={text}
            onChange={(e) => setText(e.target.value)}
            aria-describedby={shown ? `${hintId} ${errorId}` : hintId}
            aria-invalid={shown ? true : undefined}
            placeholder="eyJhbGciOi…"
          />
          <p id={hintId} className="hint">
            Paste an administrator's JWT, or open the link <code>make run</code> prints. The token stays in this tab
            (sessionStorage) and is removed from the address bar.
          </p>
          <button type="submit" className="button primary" disabled={text.trim() === ""}>
            Sign in
          </button>
        </form>
      </main>
    </div>
  );
}
