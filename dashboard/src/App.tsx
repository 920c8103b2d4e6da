import { useCallback, useEffect, useState } from "react";

import { clearToken, loadToken, saveToken, takeTokenFromFragment, tokenProblem } from "./auth";
import { Dashboard } from "./Dashboard";
import { SignIn } from "./components/SignIn";

interface Session {
  token: string | null;
  message: string | null;
}

function initialSession(): Session {
  const fromUrl = takeTokenFromFragment();
  const token = fromUrl ?? loadToken();
  if (token === null) return { token: null, message: null };
  const problem = tokenProblem(token);
  if (problem !== null) {
    clearToken();
    return { token: null, message: problem };
  }
  saveToken(token);
  return { token, message: null };
}

export function App() {
  const [session, setSession] = useState<Session>(initialSession);

  const signIn = useCallback((token: string) => {
    saveToken(token);
    setSession({ token, message: null });
  }, []);

  const signOut = useCallback((message: string | null) => {
    clearToken();
    setSession({ token: null, message });
  }, []);

  // A `#token=` link opened in this tab later (e.g. a fresh one from `make run`) signs in again.
  useEffect(() => {
    const onHash = () => {
      const token = takeTokenFromFragment();
      if (token === null) return;
      const problem = tokenProblem(token);
      if (problem !== null) signOut(problem);
      else signIn(token);
    };
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, [signIn, signOut]);

  if (session.token === null) return <SignIn message={session.message} onSignIn={signIn} />;
  return <Dashboard key={session.token} token={session.token} onSignOut={signOut} />;
}
